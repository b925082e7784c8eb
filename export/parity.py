"""How close two sets of vectors are: the one measure every export check and benchmark uses.

An exported graph (fp32 or int8) is judged against a reference (PyTorch, or the fp32 graph)
row by row: the largest absolute difference of any component, and the cosine similarity of
each pair of rows (what a nearest-neighbour search actually feels). Torch-free (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows whose norm is below this are compared as if they had this norm, so an all-zero row
# pair counts as cosine 1 only when both are zero (never a division by zero).
_EPS = 1e-12


@dataclass(frozen=True)
class Agreement:
    """How well ``got`` matches ``reference`` over N rows.

    ``max_abs_diff`` is max |got - ref| over all components; ``max_abs_ref`` is max |ref|,
    the scale that difference should be read against; ``min_cosine`` / ``mean_cosine`` are over
    the per-row cosine similarities.
    """

    rows: int
    max_abs_diff: float
    max_abs_ref: float
    min_cosine: float
    mean_cosine: float

    def within(self, atol: float, rtol: float, min_cosine: float) -> bool:
        """True when ``max_abs_diff <= atol + rtol * max_abs_ref`` and every cosine >= min_cosine."""
        return self.max_abs_diff <= atol + rtol * self.max_abs_ref and self.min_cosine >= min_cosine

    def describe(self) -> str:
        """One line: ``max |diff| 3.1e-06 (of max |x| 4.2), cosine min 0.999999 mean 1.000000``."""
        return (
            f"max |diff| {self.max_abs_diff:.2e} (of max |x| {self.max_abs_ref:.3g}), "
            f"cosine min {self.min_cosine:.6f} mean {self.mean_cosine:.6f} over {self.rows} rows"
        )


def compare(reference: np.ndarray, got: np.ndarray) -> Agreement:
    """Compare two (N, D) arrays row by row (computed in float64).

    Raises:
        ValueError: the shapes differ, are not 2-D, or N is 0.
    """
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(got, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ValueError(f"expected two (N, D) arrays of one shape with N > 0, got {ref.shape} and {out.shape}")
    ref_norm = np.maximum(np.linalg.norm(ref, axis=1), _EPS)
    out_norm = np.maximum(np.linalg.norm(out, axis=1), _EPS)
    cosine = np.einsum("nd,nd->n", ref, out) / (ref_norm * out_norm)
    both_zero = (np.abs(ref).max(axis=1) == 0) & (np.abs(out).max(axis=1) == 0)
    cosine = np.where(both_zero, 1.0, cosine)
    return Agreement(
        rows=int(ref.shape[0]),
        max_abs_diff=float(np.abs(ref - out).max(initial=0.0)),
        max_abs_ref=float(np.abs(ref).max(initial=0.0)),
        min_cosine=float(cosine.min()),
        mean_cosine=float(cosine.mean()),
    )

"""The one device vocabulary of every command and setting: ``auto``, ``cpu`` or ``cuda``.

``reid-train``, ``reid-eval``, ``reid-camstyle``, ``reid-index``, the server's FAISS gallery and
the ONNX embedder of ``reid-index`` all take these three words and mean the same by them:

* ``cpu``: the CPU, always;
* ``cuda``: a CUDA GPU, and a clear error if the component has none (never a silent CPU run);
* ``auto``: a CUDA GPU when the component has one, else the CPU.

Each component knows whether *it* can use CUDA (torch, faiss, ONNX Runtime are built
separately), so it passes that fact to :func:`choose_device`. Standard library only.
"""

from __future__ import annotations

from typing import Literal

from training.core.errors import ReIDError

__all__ = ["DEVICES", "Device", "choose_device"]

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def choose_device(requested: str, cuda_available: bool, *, who: str) -> Literal["cpu", "cuda"]:
    """Map ``requested`` (one of :data:`DEVICES`) to the device ``who`` will really use.

    ``who`` names the component in the error, e.g. ``"torch"`` or ``"this faiss build"``.

    Raises:
        ReIDError: ``requested`` is not one of :data:`DEVICES`, or it is ``"cuda"`` and
            ``cuda_available`` is false.
    """
    if requested not in DEVICES:
        raise ReIDError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    if requested == "cuda":
        raise ReIDError(f"device cuda was asked for, but {who} sees no CUDA device; use cpu or auto")
    return "cpu"

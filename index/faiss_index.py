"""FAISS index types for the gallery: build, train, add, remove, filtered search, snapshot
files, GPU placement and thread count.

Every index here stores the gallery's own int64 ids (``add_with_ids``), so FAISS ids are
SQLite ids. Distances coming out of :func:`search` are FAISS's squared L2; the gallery turns
them into true Euclidean distances.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from index.manifest import IndexSpec
from training.core.devices import choose_device
from training.core.errors import ReIDError
from training.core.fileio import atomic_write_with

log = logging.getLogger(__name__)

FLAT = "flat"
IVF_FLAT = "ivf_flat"
IVF_PQ = "ivf_pq"
IVF_SQ8 = "ivf_sq8"
AUTO = "auto"
#: Layouts an index can have (what a snapshot holds).
LAYOUTS = (FLAT, IVF_FLAT, IVF_PQ, IVF_SQ8)
#: What a gallery can be created with: a layout, or ``auto`` (the layout follows the size).
INDEX_TYPES = (*LAYOUTS, AUTO)

# FAISS's k-means warns below 39 training points per centroid; fewer gives poor centroids.
_POINTS_PER_CENTROID = 39

# ``auto``'s table (docs/gallery.md, measured in benchmarks/results/index_search.md and
# auto_index.md): exact below AUTO_EXACT_BELOW items, above it IVF-SQ8 with nlist ~ 2 sqrt(N)
# rounded to a power of two in [AUTO_MIN_NLIST, AUTO_MAX_NLIST], probing AUTO_NPROBE lists or
# enough lists to scan AUTO_MIN_SCAN vectors, whichever is more.
AUTO_EXACT_BELOW = 50_000
AUTO_MIN_NLIST = 1024
AUTO_MAX_NLIST = 16384
AUTO_NPROBE = 32
AUTO_MIN_SCAN = 6000
# k-means points per list when auto trains: 39 (FAISS's floor) left 4 points per cluster of the
# 1M x 2048-d clustered set and cut clusters across lists (recall@10 0.815 at nprobe 32); 100
# gave 0.947, and 0.982 at nprobe 64 (benchmarks/results/index_search.md), for 1.6x the k-means time.
AUTO_POINTS_PER_LIST = 100


def set_num_threads(n: int) -> None:
    """Cap the OpenMP threads FAISS uses per search/add (process-wide).

    A server running R request threads on C cores wants about C / R here, so concurrent
    searches do not oversubscribe the cores. Never called implicitly.
    """
    if not isinstance(n, int) or n < 1:
        raise ReIDError(f"faiss thread count must be a positive integer, got {n!r}")
    faiss.omp_set_num_threads(n)


def validate_spec(spec: IndexSpec, dim: int) -> None:
    """Raise ReIDError if ``spec`` cannot index ``dim``-d vectors."""
    if spec.index_type not in INDEX_TYPES:
        raise ReIDError(f"unknown index type {spec.index_type!r}; expected one of {', '.join(INDEX_TYPES)}")
    for name in ("nlist", "nprobe", "m", "nbits", "train_size"):
        value = getattr(spec, name)
        if not isinstance(value, int) or value < 1:
            raise ReIDError(f"index parameter {name} must be a positive integer, got {value!r}")
    if spec.index_type == IVF_PQ:
        if dim % spec.m:
            raise ReIDError(f"IVF-PQ needs m to divide the dimension: m={spec.m} does not divide dim={dim}")
        if spec.nbits > 16:
            raise ReIDError(f"IVF-PQ nbits must be at most 16, got {spec.nbits}")


def min_train_size(spec: IndexSpec) -> int:
    """How many stored vectors an IVF index needs before it is trained (0 for flat; for
    ``auto``, the size at which it leaves the exact index)."""
    if spec.index_type == FLAT:
        return 0
    if spec.index_type == AUTO:
        return AUTO_EXACT_BELOW
    need = _POINTS_PER_CENTROID * spec.nlist
    if spec.index_type == IVF_PQ:
        need = max(need, _POINTS_PER_CENTROID * (1 << spec.nbits))
    return need


def auto_nlist(count: int) -> int:
    """``auto``'s list count for ``count`` vectors: the power of two nearest 2 sqrt(count),
    clipped to [AUTO_MIN_NLIST, AUTO_MAX_NLIST] and to count / 39 (enough points to train).

    2 sqrt(N) rather than FAISS's usual 4-16 sqrt(N): with the scan budget a query costs about
    nlist + nprobe N / nlist vector visits either way, while training (39 nlist points x nlist
    centroids) costs 4x per doubling, and larger lists keep more of a query's neighbours in
    the list it falls in."""
    nlist = 1 << max(0, round(np.log2(2 * np.sqrt(max(count, 1)))))
    nlist = min(max(nlist, AUTO_MIN_NLIST), AUTO_MAX_NLIST)
    while nlist > 1 and _POINTS_PER_CENTROID * nlist > count:
        nlist //= 2
    return nlist


def auto_nprobe(nlist: int, count: int) -> int:
    """``auto``'s nprobe for ``count`` vectors in ``nlist`` lists: AUTO_NPROBE, or enough
    average-size lists to scan AUTO_MIN_SCAN vectors, whichever is more (at most nlist).

    Why a floor on the vectors scanned: just past AUTO_EXACT_BELOW the lists are small (nlist
    is held at AUTO_MIN_NLIST), so 32 of them are 3 % of the gallery and recall@10 fell to 0.90
    (benchmarks/results/auto_index.md); scanning 6000 vectors there costs a few milliseconds."""
    per_list = max(1, count // max(1, nlist))
    return min(nlist, max(AUTO_NPROBE, -(-AUTO_MIN_SCAN // per_list)))


def auto_train_size(requested: int, nlist: int) -> int:
    """How many stored vectors ``auto`` samples to train ``nlist`` lists (the gallery uses all
    it has when it holds fewer): AUTO_POINTS_PER_LIST per list, or ``requested`` if more."""
    return max(requested, AUTO_POINTS_PER_LIST * nlist)


def plan(spec: IndexSpec, count: int) -> IndexSpec | None:
    """The concrete layout a gallery of ``spec`` searches ``count`` vectors with, or None for
    the exact flat index (``flat``, an IVF type not yet trainable, ``auto`` while small).

    For ``auto`` the answer grows with ``count`` (see :data:`AUTO_EXACT_BELOW`); a gallery
    retrains when the planned ``nlist`` exceeds the live index's (:func:`outgrown`).
    """
    if spec.index_type == FLAT or count < min_train_size(spec):
        return None
    if spec.index_type != AUTO:
        return spec
    nlist = auto_nlist(count)
    return IndexSpec(index_type=IVF_SQ8, nlist=nlist, nprobe=auto_nprobe(nlist, count),
                     train_size=auto_train_size(spec.train_size, nlist))


def outgrown(index: faiss.Index, layout: str, target: IndexSpec | None) -> bool:
    """Whether the live ``index`` (of ``layout``) should be rebuilt as ``target`` (from
    :func:`plan`): it is still the exact stand-in, or ``target`` wants more lists."""
    if target is None:
        return False
    if layout != target.index_type:
        return True
    return is_ivf(index) and target.nlist > index.nlist


def new_flat(dim: int) -> faiss.Index:
    """An empty exact L2 index that keeps caller-given ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatL2(dim))


def train_ivf(spec: IndexSpec, dim: int, sample: np.ndarray) -> faiss.Index:
    """Return an empty IVF index of ``spec`` trained on ``sample`` (n, dim) float32."""
    quantizer = faiss.IndexFlatL2(dim)
    if spec.index_type == IVF_FLAT:
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, faiss.METRIC_L2)
    elif spec.index_type == IVF_PQ:
        index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.m, spec.nbits)
    elif spec.index_type == IVF_SQ8:
        # One byte per dimension with per-dimension ranges, on the vectors themselves (not
        # residuals): scanning needs no per-list query table, and at 2048-d the rounding error
        # (about 1e-4 of a squared distance) is far below the gaps between neighbours.
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, spec.nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_L2, False)
    else:
        raise ValueError(f"{spec.index_type} is not an IVF type")
    # The index owns its quantizer once we return; without this the Python object would free it.
    index.own_fields = True
    quantizer.this.disown()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = min(spec.nprobe, spec.nlist)
    return index


def add(index: faiss.Index, xb: np.ndarray, ids: np.ndarray) -> None:
    index.add_with_ids(np.ascontiguousarray(xb, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    if ids.size == 0:
        return 0
    return int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))


def is_ivf(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexIVF)


def is_approximate(index: faiss.Index) -> bool:
    """Whether ``index``'s distances are estimates from compressed codes (IVF-SQ8, IVF-PQ)."""
    return isinstance(index, (faiss.IndexIVFScalarQuantizer, faiss.IndexIVFPQ))


@dataclass(frozen=True)
class RawHits:
    """FAISS output: ``D`` (M, k) float32 squared L2, ``I`` (M, k) int64, -1 where empty."""

    D: np.ndarray
    I: np.ndarray  # noqa: E741


def scan_budget(index: faiss.Index, nprobe: int) -> int:
    """Most stored vectors one query of an IVF ``index`` scans at ``nprobe``: what ``nprobe``
    lists of average size hold (all of them at ``nprobe = nlist``).

    Why a budget: k-means on high-dimensional clustered embeddings leaves hub lists, whose
    centroids average many identities and so lie near every query; without a cap each query
    probes its own list and then mostly hubs, scanning ~9x what nprobe / nlist promises
    (docs/gallery.md, "Why IVF-Flat was slower than exact"). Lists are probed nearest first
    and the one being scanned is finished, so the query's own lists are always scanned.
    """
    return int(nprobe * -(-index.ntotal // index.nlist))


def search(index: faiss.Index, xq: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int | None) -> RawHits:
    """k-NN of ``xq`` (M, dim) among ids where ``allowed`` (bool over the id range) is True.

    ``allowed=None`` searches everything. The mask becomes a FAISS IDSelectorBitmap, so the
    filter is applied inside the scan and a row comes back full whenever k items pass it
    (for IVF, whenever k passing items lie in the lists scanned within :func:`scan_budget`).
    """
    selector = None
    if allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")
        # The selector borrows ``bitmap``'s memory: it stays referenced until the search ends.
        selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
    if is_ivf(index):
        nprobe = nprobe or index.nprobe
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe, max_codes=scan_budget(index, nprobe))
    elif selector is not None:
        params = faiss.SearchParameters(sel=selector)
    else:
        params = None
    D, I = index.search(np.ascontiguousarray(xq, dtype=np.float32), k, params=params)
    return RawHits(D=D, I=I)


def write_index_file(path: Path, index: faiss.Index) -> None:
    """Save ``index`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""

    def write(fh: BinaryIO) -> None:
        writer = faiss.PyCallbackIOWriter(fh.write)
        faiss.write_index(index, writer)
        del writer  # flushes FAISS's side before atomic_open fsyncs the file

    atomic_write_with(path, write)


def read_index_file(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_device(requested: str) -> str:
    """Map ``"auto" | "cpu" | "cuda"`` (:mod:`training.core.devices`) to the device searches
    will really use. ``auto`` without a usable GPU says why in one log line (info for a CPU
    build of faiss, a warning for a GPU build that sees no GPU); ``cuda`` without one is a
    ReIDError."""
    has_gpu = gpu_available()
    device = choose_device(requested, has_gpu, who="faiss")
    if requested == "auto" and not has_gpu:
        if not hasattr(faiss, "StandardGpuResources"):
            log.info("gallery device=auto: this faiss build has no GPU support; searching on the CPU")
        else:
            # A GPU build that finds no GPU was installed for one: say so where CLIs show it,
            # as ONNX Runtime's GPU build does when its CUDA provider cannot start.
            log.warning("gallery device=auto: faiss sees no GPU; searching on the CPU")
    return device


class GpuMirror:
    """A GPU copy of a CPU index for unfiltered searches, refreshed lazily after mutations."""

    def __init__(self) -> None:
        self._resources = faiss.StandardGpuResources()
        self._index: faiss.Index | None = None
        self._failed = False
        self._lock = threading.Lock()  # concurrent searches must not copy the index twice

    def invalidate(self) -> None:
        with self._lock:
            self._index = None

    def get(self, cpu_index: faiss.Index) -> faiss.Index | None:
        """The GPU copy of ``cpu_index``, or None (after a log line) if it cannot be moved."""
        with self._lock:
            if self._failed:
                return None
            if self._index is None:
                try:
                    self._index = faiss.index_cpu_to_gpu(self._resources, 0, cpu_index)
                except RuntimeError as exc:
                    # Some layouts (e.g. IVF-PQ with many bytes per code) do not fit GPU kernels.
                    self._failed = True
                    log.warning("could not move the index to the GPU (%s); searching on the CPU", exc)
                    return None
            return self._index

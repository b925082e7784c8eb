"""The plots beside the results tables: matplotlib (the ``bench`` extra) on its file backend."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType | None:
    """``matplotlib.pyplot`` drawing to files (no screen here), or None when matplotlib is not
    installed: a benchmark then still writes its table, and says that the plot was skipped."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

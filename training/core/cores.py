"""How many CPU cores this process may use, for sizing thread pools and ONNX Runtime."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere).

    Honours taskset/cgroup CPU pinning, unlike ``os.cpu_count``, so a container limited to
    2 cores does not start one thread per host core.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)

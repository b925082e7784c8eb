"""The serving side needs no torch: every module of ``server`` and ``index`` and
``export.runtime`` imports with torch blocked, and reaches into ``training`` only through
``training.core``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class _Blocked:
        # A meta-path finder that refuses the training stack, as on a serving install.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "torchvision", "onnx", "onnxscript"}:
                raise ImportError(f"{name} is blocked: the serving side must not import it")
            return None

    sys.meta_path.insert(0, _Blocked())
    names = ["export.runtime", "export.contract"]
    for package in ("server", "index"):
        module = importlib.import_module(package)
        names += [package] + [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
    outside = sorted(m for m in sys.modules
                     if (m == "training" or m.startswith("training."))
                     and m not in ("training", "training.core") and not m.startswith("training.core."))
    print("imported", len(names))
    print("outside-core", outside)
    """
)


def test_serving_modules_import_without_torch() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert int(lines["imported"]) > 20  # the walk found the packages, not an empty list
    assert lines["outside-core"] == "[]", f"serving imports training modules outside the core: {lines['outside-core']}"


def test_core_imports_only_its_allowed_dependencies() -> None:
    probe = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        before = set(sys.modules)
        import training.core
        for info in pkgutil.walk_packages(training.core.__path__, "training.core."):
            importlib.import_module(info.name)
        ours = {"training", "export", "index", "server", "clients"}
        roots = {m.split(".")[0] for m in set(sys.modules) - before}
        allowed = {"numpy", "PIL", "tqdm", "training"}
        bad = sorted(r for r in roots if r in ours - {"training"} or
                     (r not in allowed and r not in sys.stdlib_module_names and not r.startswith("_")))
        print(bad)
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"training.core imports beyond stdlib/numpy/Pillow/tqdm: {done.stdout}"

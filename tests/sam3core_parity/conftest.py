"""Engine parity against Meta's SAM 3 (PyPI ``sam3==0.1.4``, a test oracle only: Meta's licence).

``sam3`` is installed with ``--no-deps`` into a side directory (default ``<repo>/.reference``, or
``$SAM3AGENT_REFERENCE_DIR``) that is *appended* to ``sys.path``; its model code also needs ``timm``,
``ftfy``, ``iopath`` and ``einops`` in the venv. Without it the modules that need it are skipped (not
imported) with the reason, unless ``SAM3AGENT_REQUIRE_REFERENCE=1`` (CI), which makes it an error.
Modules listed in ``NO_REFERENCE_NEEDED`` run everywhere.

The comparison code lives in ``benchmarks/parity.py`` (loaded here as ``parity``), so the CI test and
the full-size benchmark measure the same thing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(os.environ.get("SAM3AGENT_REFERENCE_DIR") or REPO / ".reference")
INSTALL = (".venv/bin/pip install -q --no-deps --target .reference sam3==0.1.4 && "
           ".venv/bin/pip install timm ftfy iopath einops")
NO_REFERENCE_NEEDED = {"test_port_repro.py"}


def _import_reference() -> str | None:
    """Import Meta's model code; returns why it failed, or ``None``."""
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.append(str(REFERENCE_DIR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its CUDA-only autocast decorators warn on CPU
            import sam3.model.sam3_image
            import sam3.model.sam3_image_processor  # noqa: F401
    except Exception as e:  # any import failure means "no usable oracle"
        return f"{type(e).__name__}: {e}"
    return None


_problem = _import_reference()
if _problem is not None:
    MESSAGE = f"Meta's sam3 is not importable from {REFERENCE_DIR} ({_problem}); install: {INSTALL}"
    if os.environ.get("SAM3AGENT_REQUIRE_REFERENCE") == "1":
        raise ImportError(MESSAGE)

    class _Unavailable(pytest.File):
        """Stands in for a test module that needs sam3: collecting it skips it, with the reason."""

        def collect(self):  # type: ignore[no-untyped-def]
            pytest.skip(MESSAGE)

    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        """Skip the modules that need sam3 instead of importing them."""
        if module_path.name in NO_REFERENCE_NEEDED:
            return None
        return _Unavailable.from_parent(parent, path=module_path)


def load_parity() -> ModuleType:
    """``benchmarks/parity.py`` as a module."""
    if "parity_benchmark" in sys.modules:
        return sys.modules["parity_benchmark"]
    spec = importlib.util.spec_from_file_location("parity_benchmark", REPO / "benchmarks" / "parity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def parity() -> ModuleType:
    return load_parity()

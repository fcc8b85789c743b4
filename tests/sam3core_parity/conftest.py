"""Engine parity against Meta's SAM 3 (PyPI ``sam3==0.1.4``, a test oracle only: Meta's licence).

How ``sam3`` is found (a side directory; its model code also needs ``timm``, ``ftfy``, ``iopath`` and
``einops`` in the venv) and what happens without it: see ``tests/oracle.py``. Modules listed in
``NO_REFERENCE_NEEDED`` run everywhere.

The comparison code lives in ``benchmarks/parity.py`` (loaded here as ``parity``), so the CI test and
the full-size benchmark measure the same thing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from oracle import import_reference, skipping_hook

REPO = Path(__file__).resolve().parents[2]
NO_REFERENCE_NEEDED = {"test_port_repro.py"}

_problem = import_reference("sam3.model.sam3_image", "sam3.model.sam3_image_processor")
if _problem is not None:
    pytest_pycollect_makemodule = skipping_hook("Meta's sam3", _problem, keep=NO_REFERENCE_NEEDED)


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

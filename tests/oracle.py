"""Meta's ``sam3`` package as a test oracle (tests/reference, tests/sam3core_parity).

``sam3==0.1.4`` pins older numpy / tqdm / typing_extensions than our environment, so it is installed
with ``--no-deps`` into a side directory (default ``<repo>/.reference``, or
``$SAM3AGENT_REFERENCE_DIR``) that is *appended* to ``sys.path``: numpy, torch and the rest still come
from the venv. A folder that needs it skips its modules (without importing them) when it cannot be
imported, unless ``SAM3AGENT_REQUIRE_REFERENCE=1`` (CI), which makes that an error.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("SAM3AGENT_REFERENCE_DIR") or REPO / ".reference")
INSTALL = (".venv/bin/pip install -q --no-deps --target .reference sam3==0.1.4 && "
           "the other requirements of the 'reference' extra into the venv (see .ci/run)")


def import_reference(*modules: str) -> str | None:
    """Import ``modules`` of Meta's package from the side directory; returns why it failed, or ``None``."""
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.append(str(REFERENCE_DIR))
    try:
        import matplotlib

        matplotlib.use("Agg")
        with warnings.catch_warnings():
            # importing sam3 imports its model builder, whose CUDA-only autocast decorators warn on CPU
            warnings.simplefilter("ignore")
            for name in modules:
                importlib.import_module(name)
    except Exception as e:  # any import failure means "no usable oracle"
        return f"{type(e).__name__}: {e}"
    return None


def skipping_hook(what: str, problem: str, keep: Collection[str] = ()) -> Callable[..., pytest.Collector | None]:
    """A ``pytest_pycollect_makemodule`` hook that skips the folder's modules (those not in ``keep``).

    Raises:
        ImportError: When ``SAM3AGENT_REQUIRE_REFERENCE=1``: the oracle must be there.
    """
    message = f"{what} is not importable from {REFERENCE_DIR} ({problem}); install: {INSTALL}"
    if os.environ.get("SAM3AGENT_REQUIRE_REFERENCE") == "1":
        raise ImportError(message)

    class Unavailable(pytest.File):
        """Stands in for a test module that needs sam3: collecting it skips it, with the reason."""

        def collect(self):  # type: ignore[no-untyped-def]
            pytest.skip(message)

    def hook(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if module_path.name in keep:
            return None
        return Unavailable.from_parent(parent, path=module_path)

    return hook

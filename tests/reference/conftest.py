"""Differential tests against Meta's reference SAM 3 Agent (PyPI ``sam3==0.1.4``), used as a test oracle.

``sam3`` pins older numpy / tqdm / typing_extensions than our environment, so it is installed with
``--no-deps`` into a side directory (default ``<repo>/.reference``, or ``$SAM3AGENT_REFERENCE_DIR``) that
is *appended* to ``sys.path`` here: numpy, torch and the rest still come from the venv. Without it
every test module of the folder is skipped (not imported), unless ``SAM3AGENT_REQUIRE_REFERENCE=1``
(CI), which makes it an error.

The wheel lacks the prompt files ``agent_inference`` opens next to ``agent_core.py``; an autouse
fixture patches the module's ``open`` to serve marker texts for those two paths instead (nothing is
written into the side directory).
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(os.environ.get("SAM3AGENT_REFERENCE_DIR") or REPO / ".reference")
INSTALL = (
    ".venv/bin/pip install -q --no-deps --target .reference sam3==0.1.4 && "
    "the other requirements of the 'reference' extra into the venv (see .ci/run)"
)

def _import_reference() -> str | None:
    """Import the reference agent; returns why it failed, or ``None``."""
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.append(str(REFERENCE_DIR))
    try:
        import matplotlib

        matplotlib.use("Agg")
        with warnings.catch_warnings():
            # importing sam3 imports its model builder, whose CUDA-only autocast decorators warn on CPU
            warnings.simplefilter("ignore")
            import sam3.agent.agent_core
            import sam3.agent.client_sam3  # noqa: F401
    except Exception as e:  # any import failure means "no usable oracle"
        return f"{type(e).__name__}: {e}"
    return None


_problem = _import_reference()
if _problem is not None:
    MESSAGE = f"Meta's reference agent (sam3) is not importable from {REFERENCE_DIR} ({_problem}); install: {INSTALL}"
    if os.environ.get("SAM3AGENT_REQUIRE_REFERENCE") == "1":
        raise ImportError(MESSAGE)

    class _Unavailable(pytest.File):
        """Stands in for a test module of this folder: collecting it skips it, with the reason."""

        def collect(self):  # type: ignore[no-untyped-def]
            pytest.skip(MESSAGE)

    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector:
        """Skip every test module here instead of importing it (they need sam3)."""
        return _Unavailable.from_parent(parent, path=module_path)


@pytest.fixture(autouse=True)
def reference_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve the reference's two system prompt files as marker texts (see the module docstring)."""
    from meta_runner import CHECK_MARKER, MAIN_MARKER
    from sam3.agent import agent_core

    folder = Path(agent_core.__file__).resolve().parent / "system_prompts"
    served = {
        str(folder / "system_prompt.txt"): MAIN_MARKER,
        str(folder / "system_prompt_iterative_checking.txt"): CHECK_MARKER,
    }

    def fake_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        text = served.get(str(Path(os.fspath(file)).resolve())) if isinstance(file, str | os.PathLike) else None
        return io.StringIO(text) if text is not None else builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(agent_core, "open", fake_open, raising=False)

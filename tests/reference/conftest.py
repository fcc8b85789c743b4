"""Differential tests against Meta's reference SAM 3 Agent (PyPI ``sam3==0.1.4``), used as a test oracle.

How ``sam3`` is found (a side directory) and what happens without it: see ``tests/oracle.py``.

The wheel lacks the prompt files ``agent_inference`` opens next to ``agent_core.py``; an autouse
fixture patches the module's ``open`` to serve marker texts for those two paths instead (nothing is
written into the side directory).
"""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest
from oracle import import_reference, skipping_hook

_problem = import_reference("sam3.agent.agent_core", "sam3.agent.client_sam3")
if _problem is not None:
    pytest_pycollect_makemodule = skipping_hook("Meta's reference agent (sam3)", _problem)


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

"""``import sam3core`` stays torch-free; ``from sam3core import Sam3Engine`` still works (lazy attribute)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import sam3core
light = sorted(m for m in ("torch", "transformers", "sam3core.engine") if m in sys.modules)
from sam3core import Sam3Engine
import sam3core.engine
print(json.dumps({"light": light, "same": Sam3Engine is sam3core.engine.Sam3Engine,
                  "listed": "Sam3Engine" in dir(sam3core) and "Sam3Engine" in sam3core.__all__,
                  "heavy": "sam3core.engine" in sys.modules}))
"""


def _probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_import_is_torch_free_and_engine_is_lazy() -> None:
    done = _probe(PROBE)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"light": [], "same": True, "listed": True, "heavy": True}


def test_unknown_attribute_raises_attribute_error() -> None:
    import sam3core

    with pytest.raises(AttributeError, match="no_such_name"):
        sam3core.no_such_name  # noqa: B018
    done = _probe("from sam3core import NoSuchThing")
    assert done.returncode != 0 and "ImportError" in done.stderr

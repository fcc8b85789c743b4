"""``python -m sam3core``: the offline engine self-check passes and reports each stage."""

from __future__ import annotations

import pytest

from sam3core.__main__ import main


def test_selfcheck_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.count("PASS") == 5
    assert "all checks passed" in out

"""``sam3agent selftest``: passes offline in seconds, and reports a broken stage as FAIL (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam3agent.app.cli import main
from sam3agent.app.selftest import SAVED_FILES, run_selftest


def test_selftest_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["selftest", "--out", str(tmp_path / "kept")])
    out = capsys.readouterr().out
    assert code == 0, out
    stages = [line for line in out.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    assert len(stages) == 5 and all(line.startswith("PASS") for line in stages)
    for words in ("torch stack", "SAM 3 load", "segmentation + cache", "agent loop over HTTP", "result save + HTML"):
        assert any(words in line for line in stages)
    assert all((tmp_path / "kept" / name).is_file() for name in SAVED_FILES)
    assert f"saved    {(tmp_path / 'kept').resolve()}" in out
    assert "selftest passed in" in out


def test_a_failing_stage_fails_and_skips_the_rest(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import sam3core.testing

    def broken(directory: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(sam3core.testing, "save_tiny_sam3", broken)
    assert main(["selftest"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  SAM 3 load" in out and "OSError: disk full" in out
    assert out.count("SKIP  ") == 3 and "selftest FAILED" in out


def test_report_without_out_dir_keeps_nothing() -> None:
    seen = []
    report = run_selftest(on_stage=seen.append)
    assert report.passed and report.run_dir is None
    assert [s.ok for s in seen] == [True] * 5

"""``sam3agent``: options checked before any work starts, and ``--version``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

import sam3agent.app.selftest
from sam3agent.app.cli import main


@pytest.fixture
def no_selftest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a self-test stage starts."""

    def refuse(**kwargs: object) -> None:
        raise AssertionError("the self-test ran before its options were checked")

    monkeypatch.setattr(sam3agent.app.selftest, "run_selftest", refuse)


@pytest.mark.parametrize("make", ["file", "under_a_file"])
def test_selftest_out_that_cannot_be_a_folder_exits_2_up_front(make: str, tmp_path: Path, no_selftest: None,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "existing-file"
    existing.write_text("keep me")
    out = existing if make == "file" else existing / "sub" / "run"
    assert main(["selftest", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err and "not a folder" in captured.err
    assert "PASS" not in captured.out and "FAIL" not in captured.out
    assert existing.read_text() == "keep me"


def test_selftest_out_existing_folder_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(**kwargs: object) -> sam3agent.app.selftest.SelftestReport:
        seen.update(kwargs)
        return sam3agent.app.selftest.SelftestReport(stages=[sam3agent.app.selftest.StageResult("stub", True)])

    monkeypatch.setattr(sam3agent.app.selftest, "run_selftest", fake)
    assert main(["selftest", "--out", str(tmp_path)]) == 0
    assert seen["out_dir"] == tmp_path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sam3agent {metadata.version('sam3agent')}"


def test_run_with_a_lone_surrogate_in_the_query_exits_2(tmp_path, capsys) -> None:
    from PIL import Image

    from sam3agent.app.cli import main

    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    code = main(["run", str(photo), "cat \udcff", "--llm-base-url", "http://127.0.0.1:9/v1"])
    assert code == 2
    assert "lone surrogate at position 4" in capsys.readouterr().err

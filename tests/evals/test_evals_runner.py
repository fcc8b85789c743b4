"""``python -m evals reasonseg run`` in-process with the fake engine and the scripted policy.

Scores are checked against hand-computed values (see evals_runner_backend's plan): per sample
(I, U) = a_nested (948, 948), b_empty (0, 0) [no_mask], c_cp1252 (50, 50), d_exif (200, 200),
e_thin (49, 752) [the whole 20x40 image minus 48 ignore pixels].
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from evals_runner_helpers import (
    EXPECTED_IU,
    by_id,
    comparable,
    expected_reasonseg,
    flat,
    records,
    rs_run,
    run_cli,
    sample_iou,
    summary,
)
from PIL import Image

from evals import reasonseg
from evals.cli import build_parser
from evals.fixtures import make_reasonseg
from evals.records import MINIMUM_FIELDS, rle_mask


@pytest.fixture
def fx(tmp_path: Path):
    return make_reasonseg(tmp_path / "data")


def test_run_scores_statuses_and_files(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(rs_run(fx.root, out, "--concurrency", "3", "--split", "val"), capsys)
    assert code == 0
    got = summary(out)
    assert flat(got["scores"]) == pytest.approx(flat(expected_reasonseg(EXPECTED_IU)), abs=1e-9)
    assert got["status"] == {"answered": 4, "no_mask": 1, "budget_exhausted": 0, "failed": 0}
    assert got["failures"] == {"bad_ids": 1, "no_tool_call": 1}
    assert got["turns"] == {"total": 2 + 1 + 3 + 3 + 2, "mean": 11 / 5}
    assert got["coverage"] == {"samples": 5, "of": 5}
    # the paper's val row sits beside ours
    table = got["table"]
    assert table["columns"] == ["gIoU val", "cIoU val"]
    assert table["rows"][0]["values"] == pytest.approx([got["scores"]["giou"], got["scores"]["ciou"]])
    assert [table["rows"][1]["method"], table["rows"][1]["values"][0]] == ["SAM 3 Agent + Qwen2.5-VL 7B", 65.4]
    md = (out / "summary.md").read_text("utf-8")
    assert "| SAM 3 Agent + Qwen2.5-VL 7B | 65.4 |" in md and md in stdout
    recs = by_id(out)
    assert sorted(recs) == fx.ids
    for sample_id, r in recs.items():
        assert all(k in r for k in MINIMUM_FIELDS) and r["schema_version"] == 1
        assert r["iou"] == pytest.approx(sample_iou(*EXPECTED_IU[sample_id]), abs=1e-12)
        assert (r["intersection"], r["union"]) == EXPECTED_IU[sample_id]
        assert isinstance(r["seconds"], float) and r["attempt"] == 1
        mask = np.asarray(Image.open(out / r["mask_file"])) > 0
        assert np.array_equal(mask, rle_mask(r["mask_rle"]))
    assert recs["d_exif"]["phrases"] == ["target"] and recs["d_exif"]["failures"] == {"bad_ids": 1}
    assert recs["b_empty"]["status"] == "no_mask" and recs["b_empty"]["turns"] == 1
    assert recs["e_thin"]["phrases"] == ["whole"]
    # the mask files score the same with the independent scorer
    report = reasonseg.score_prediction_dir(fx.root, out / "masks")
    assert flat(report.scores.to_dict()) == pytest.approx(flat(got["scores"]), abs=1e-9)
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["dataset"]["split"] == "val" and manifest["shard"] is None
    assert manifest["agent"]["prompt_version"] == got["prompt_version"]
    assert manifest["packages"]["numpy"] == np.__version__


def test_rerun_of_a_finished_run_changes_nothing(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    before = [comparable(r) for r in records(out)]
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    assert [comparable(r) for r in records(out)] == before


def test_limit_then_extend(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--limit", "2"), capsys)[0] == 0
    assert sorted(by_id(out)) == fx.ids[:2]
    assert summary(out)["coverage"] == {"samples": 2, "of": 5}
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    assert sorted(by_id(out)) == fx.ids
    assert flat(summary(out)["scores"]) == pytest.approx(flat(expected_reasonseg(EXPECTED_IU)), abs=1e-9)


@pytest.mark.parametrize("cut", ["partial_json", "half_of_a_real_line"])
def test_torn_last_line_is_cut_and_the_sample_reruns(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     cut: str) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    reference = summary(out)
    raw = (out / "samples.jsonl").read_bytes()
    lines = raw.splitlines(keepends=True)
    if cut == "partial_json":
        torn = raw + b'{"schema_version": 1, "id": "zz", "query": "x'
    else:  # the last sample's line was cut mid-write: that sample must run again
        torn = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    (out / "samples.jsonl").write_bytes(torn)
    code, _, err = run_cli(rs_run(fx.root, out), capsys)
    assert code == 0, err
    assert sorted(by_id(out)) == fx.ids
    assert summary(out) == reference


def test_damaged_middle_line_is_an_error(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--limit", "2"), capsys)[0] == 0
    lines = (out / "samples.jsonl").read_text("utf-8").splitlines(keepends=True)
    (out / "samples.jsonl").write_text("garbage\n" + "".join(lines), "utf-8")
    code, _, err = run_cli(rs_run(fx.root, out), capsys)
    assert code == 2 and "line 1 is not a sample record" in err


def test_different_manifest_is_refused(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--max-turns", "7", "--limit", "1"), capsys)[0] == 0
    code, _, err = run_cli(rs_run(fx.root, out, "--max-turns", "9", "--shard", "0/2"), capsys)
    assert code == 2
    assert "cannot be resumed" in err and "agent.max_llm_calls (7 -> 9)" in err and "shard (null -> {" in err
    assert len(records(out)) == 1
    # options that do not change results (concurrency, limit, progress) are not part of the manifest
    assert run_cli(rs_run(fx.root, out, "--max-turns", "7", "--concurrency", "1"), capsys)[0] == 0


def test_failed_samples_are_counted_then_retried(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    (out / "masks").mkdir(parents=True)  # as if a killed attempt had written its mask but not its line
    Image.fromarray(np.full((60, 40), 255, np.uint8)).save(out / "masks" / "d_exif.png")
    monkeypatch.setenv("EVALS_TEST_FAIL", "the tall sign")
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    failed = {**EXPECTED_IU, "d_exif": (0, 200)}  # scored as an empty prediction
    got = summary(out)
    assert flat(got["scores"]) == pytest.approx(flat(expected_reasonseg(failed)), abs=1e-9)
    assert got["status"]["failed"] == 1 and got["status"]["answered"] == 3
    rec = by_id(out)["d_exif"]
    assert rec["status"] == "failed" and rec["iou"] == 0.0 and "injected failure" in rec["error"]
    assert rec["mask_file"] is None and not (out / "masks" / "d_exif.png").exists()
    # still failing: retried (attempt 2), still one line per id, still counted
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    assert by_id(out)["d_exif"]["attempt"] == 2 and by_id(out)["a_nested"]["attempt"] == 1
    assert summary(out)["status"]["failed"] == 1
    # the backend is back: retried and answered
    monkeypatch.delenv("EVALS_TEST_FAIL")
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    rec = by_id(out)["d_exif"]
    assert rec["status"] == "answered" and rec["attempt"] == 3
    assert flat(summary(out)["scores"]) == pytest.approx(flat(expected_reasonseg(EXPECTED_IU)), abs=1e-9)


def test_abort_after_consecutive_backend_failures(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("EVALS_TEST_FAIL", "*")
    argv = rs_run(fx.root, out, "--concurrency", "1", "--max-consecutive-failures", "2")
    code, _, err = run_cli(argv, capsys)
    assert code == 3
    assert "stopped after 2 consecutive LLM backend failures" in err and "rerun the same command" in err
    assert [r["status"] for r in records(out)] == ["failed", "failed"]
    assert not (out / "summary.json").exists()
    monkeypatch.delenv("EVALS_TEST_FAIL")
    assert run_cli(argv, capsys)[0] == 0
    assert sorted(by_id(out)) == fx.ids
    assert summary(out)["status"]["failed"] == 0


def test_saves_trajectories_and_overlays(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--save-trajectories", "--save-overlays", "--limit", "2"), capsys)[0] == 0
    for sample_id in fx.ids[:2]:
        assert (out / "trajectories" / sample_id / "trajectory.json").is_file()
        overlay = out / "overlays" / f"{sample_id}.jpg"
        width = fx.sample(sample_id).width
        assert overlay.is_file() and Image.open(overlay).width > 2 * width


def test_viewer_index_called(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    fake = types.ModuleType("sam3agent.viewer")
    fake.write_eval_index = lambda run_dir: calls.append(run_dir) or run_dir / "index.html"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sam3agent.viewer", fake)
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--limit", "1"), capsys)[0] == 0
    assert calls == [out]


def test_hidden_test_flag_and_bad_shard(capsys: pytest.CaptureFixture[str]) -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["reasonseg"].format_help()  # type: ignore[union-attr]
    assert "run" in help_text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reasonseg", "run", "--help"])
    assert "_fake-backend" not in capsys.readouterr().out
    for bad in ("2/2", "x", "1/0", "-1/3"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["reasonseg", "run", "--data", "d", "--out", "o", "--shard", bad])
        assert "--shard" in capsys.readouterr().err


def test_test_split_columns_carry_the_papers_test_row(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(rs_run(fx.root, out, "--split", "test", "--limit", "2"), capsys)[0] == 0
    table = summary(out)["table"]
    assert table["columns"] == ["gIoU test all", "gIoU test short", "gIoU test long", "cIoU test all"]
    assert table["rows"][1]["values"] == [62.6, 59.1, 63.7, None]


def _http_policy(body: dict) -> str:
    """Segment 'object', then select mask 1 (or report no mask): an OpenAI-wire policy."""
    last = body["messages"][-1]["content"]
    last_text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
    if len(body["messages"]) == 2:
        return '<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "object"}}</tool>'
    if "found nothing" in last_text:
        return '<tool>{"name": "report_no_mask", "parameters": {}}</tool>'
    return '<tool>{"name": "select_masks_and_return", "parameters": {"final_answer_masks": [1]}}</tool>'


def test_real_backends_http_llm_and_tiny_sam3(fx, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              tiny_sam3_dir: Path) -> None:
    from sam3agent.llm.server import ScriptedOpenAIServer

    out = tmp_path / "run"
    with ScriptedOpenAIServer(_http_policy) as server:
        argv = ["reasonseg", "run", "--data", str(fx.root), "--out", str(out), "--limit", "2", "--concurrency", "2",
                "--llm-base-url", server.base_url, "--model", "scripted", "--sam3", str(tiny_sam3_dir),
                "--device", "cpu", "--no-progress"]
        code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    recs = by_id(out)
    assert sorted(recs) == fx.ids[:2] and all(r["status"] in ("answered", "no_mask") for r in recs.values())
    assert all(r["tokens"]["prompt"] > 0 for r in recs.values())
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["llm"] == {"kind": "openai_compatible", "model": "scripted"}
    assert manifest["sam3"] == str(tiny_sam3_dir) and manifest["info"]["base_url"] == server.base_url
    # an unreachable server: every sample fails, the run stops after 2 in a row with exit code 3
    argv = ["reasonseg", "run", "--data", str(fx.root), "--out", str(tmp_path / "down"), "--concurrency", "1",
            "--llm-base-url", "http://127.0.0.1:9/v1", "--model", "scripted", "--llm-retries", "0",
            "--sam3", str(tiny_sam3_dir), "--device", "cpu", "--no-progress", "--max-consecutive-failures", "2"]
    code, _, err = run_cli(argv, capsys)
    assert code == 3 and "2 consecutive LLM backend failures" in err
    # missing weights are a user error naming the fix
    argv = ["reasonseg", "run", "--data", str(fx.root), "--out", str(tmp_path / "x"), "--sam3", str(tmp_path / "nope")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "SAM 3 directory not found" in err
    # nothing was recorded, so the corrected command starts that directory afresh
    assert not (tmp_path / "x" / "manifest.json").exists()
    assert run_cli(rs_run(fx.root, tmp_path / "x", "--limit", "1"), capsys)[0] == 0

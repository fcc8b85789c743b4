"""``--shard i/N`` and ``python -m evals merge``: merged shards equal one unsharded run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evals_runner_helpers import (
    OL_HOOK,
    big_reasonseg,
    by_id,
    comparable,
    records,
    rs_run,
    run_cli,
    summary,
)

from evals.fixtures import make_omnilabel
from evals.reasonseg import score_prediction_dir


def _comparable_records(run_dir: Path) -> list[dict]:
    return [comparable(r) for r in records(run_dir)]


def test_reasonseg_shards_merge_into_the_unsharded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx, ids = big_reasonseg(tmp_path / "val", copies=1)  # 10 samples, split "val" from the folder name
    for i in range(2):
        assert run_cli(rs_run(fx.root, tmp_path / f"shard{i}", "--shard", f"{i}/2"), capsys)[0] == 0
    assert sorted(by_id(tmp_path / "shard0")) == ids[0::2]
    assert sorted(by_id(tmp_path / "shard1")) == ids[1::2]
    assert run_cli(rs_run(fx.root, tmp_path / "full"), capsys)[0] == 0
    code, stdout, _ = run_cli(["merge", str(tmp_path / "shard1"), str(tmp_path / "shard0"), "--out",
                               str(tmp_path / "merged")], capsys)
    assert code == 0 and "gIoU val" in stdout
    merged, full = tmp_path / "merged", tmp_path / "full"
    assert summary(merged) == summary(full)
    assert summary(merged)["split"] == "val" and summary(merged)["n_samples"] == 10
    assert [r["id"] for r in records(merged)] == ids
    assert _comparable_records(merged) == sorted(_comparable_records(full), key=lambda r: r["id"])
    merged_masks, full_masks = (score_prediction_dir(fx.root, d / "masks").scores for d in (merged, full))
    assert merged_masks == full_masks
    manifest = json.loads((merged / "manifest.json").read_text("utf-8"))
    assert manifest["shard"] is None and len(manifest["info"]["merged_from"]) == 2
    # merging again into the same output is allowed and gives the same result
    assert run_cli(["merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out", str(merged)], capsys)[0] == 0
    assert summary(merged) == summary(full)


def test_omnilabel_shards_merge_into_the_unsharded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_omnilabel(tmp_path / "ol")

    def run(out: Path, *extra: str) -> int:
        argv = ["omnilabel", "run", "--gt", str(fx.gt_path), "--images", str(fx.images_dir), "--out", str(out),
                *OL_HOOK, *extra]
        return run_cli(argv, capsys)[0]

    assert run(tmp_path / "s0", "--shard", "0/2") == 0 and run(tmp_path / "s1", "--shard", "1/2") == 0
    assert {r["image_id"] for r in records(tmp_path / "s0")} == {1, 3}
    assert {r["image_id"] for r in records(tmp_path / "s1")} == {2}
    assert run(tmp_path / "full") == 0
    assert run_cli(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")], capsys)[0] == 0
    assert summary(tmp_path / "m") == summary(tmp_path / "full")
    assert summary(tmp_path / "m")["scores"]["AP_descr"] == pytest.approx(700 / 9)
    predictions = [json.loads((tmp_path / d / "predictions.json").read_text("utf-8")) for d in ("m", "full")]
    assert predictions[0] == predictions[1]


def test_merge_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx, _ = big_reasonseg(tmp_path / "data", copies=0)
    s0, s1, s2 = tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"
    assert run_cli(rs_run(fx.root, s0, "--shard", "0/3"), capsys)[0] == 0
    assert run_cli(rs_run(fx.root, s1, "--shard", "1/3", "--max-turns", "9"), capsys)[0] == 0
    assert run_cli(rs_run(fx.root, s2, "--shard", "2/3"), capsys)[0] == 0
    out = str(tmp_path / "m")
    code, _, err = run_cli(["merge", str(s0), str(s1), str(s2), "--out", out], capsys)
    assert code == 2 and "different setup" in err and "agent.max_llm_calls (40 -> 9)" in err
    code, _, err = run_cli(["merge", str(s0), str(s2), "--out", out], capsys)
    assert code == 2 and "missing 1/3" in err
    code, _, err = run_cli(["merge", str(s0), str(s0), str(s2), "--out", out], capsys)
    assert code == 2 and "given twice 0/3" in err
    (s2 / "summary.json").unlink()
    assert run_cli(rs_run(fx.root, s1, "--shard", "1/3"), capsys)[0] == 2  # s1's manifest says 9 turns
    assert run_cli(rs_run(fx.root, tmp_path / "s1b", "--shard", "1/3"), capsys)[0] == 0
    code, _, err = run_cli(["merge", str(s0), str(tmp_path / "s1b"), str(s2), "--out", out], capsys)
    assert code == 2 and "has not finished" in err
    assert run_cli(rs_run(fx.root, tmp_path / "whole"), capsys)[0] == 0
    code, _, err = run_cli(["merge", str(tmp_path / "whole"), "--out", out], capsys)
    assert code == 2 and "not a shard" in err

"""``python -m evals omnilabel run`` with the fake engine (GT box masks) and the scripted policy.

Hand-computed: every positive pair gets its GT boxes at score 0.9 (7 descr, 6 categ); the bicycle
description (negative in images 1 and 3) segments the whole image at 0.95: two false positives
ranked above every true positive. descr: FP FP TP*7 -> precision 1/3, 2/4, ..., 7/9, interpolated
7/9 at every recall point and IoU threshold; descr-L (person-with-hat Dp x2, bicycle Dn x2): FP FP
TP TP -> 1/2; descr-S, descr-M, descr-pos and categ: 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evals_runner_backend import ENGINES
from evals_runner_helpers import OL_HOOK, by_id, flat, run_cli, summary

from evals.fixtures import OmniLabelFixture, make_omnilabel
from evals.omnilabel import score_files
from sam3core.image import prepare_image

EXPECTED = {"AP_descr": 700 / 9, "AP_descr_S": 100.0, "AP_descr_M": 100.0, "AP_descr_L": 50.0,
            "AP_descr_pos": 100.0, "AP_categ": 100.0,
            "AP": 100 * 2 * (7 / 9) * 1.0 / (7 / 9 + 1.0 + 1e-5)}


@pytest.fixture
def fx(tmp_path: Path) -> OmniLabelFixture:
    return make_omnilabel(tmp_path / "ol")


def ol_run(fx: OmniLabelFixture, out: Path, *extra: str) -> list[str]:
    return ["omnilabel", "run", "--gt", str(fx.gt_path), "--images", str(fx.images_dir), "--out", str(out),
            *OL_HOOK, *extra]


def test_run_scores_boxes_and_routes(fx: OmniLabelFixture, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(ol_run(fx, out, "--concurrency", "3"), capsys)
    assert code == 0
    got = summary(out)
    assert {k: got["scores"][k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-7)
    assert got["scores"]["n_gt"] == {"categ": 6, "descr": 7, "descr_pos": 7, "descr_S": 2, "descr_M": 3,
                                     "descr_L": 2}
    assert got["routes"] == {"agent": 13, "engine": 7} and got["n_samples"] == 20
    assert got["n_boxes"] == 6 + 7 + 2
    assert got["status"] == {"answered": 15, "no_mask": 5, "budget_exhausted": 0, "failed": 0}
    assert got["table"]["columns"][:4] == ["AP descr", "AP descr-S", "AP descr-M", "AP descr-L"]
    assert got["table"]["rows"][1]["values"][:4] == [36.5, 52.6, 34.3, 26.7]
    assert "| SAM 3 Agent + Qwen2.5-VL 7B | 36.5 | 52.6 | 34.3 | 26.7 |" in stdout
    # the official prediction file scores the same with the independent scorer
    independent = flat(score_files(fx.gt_path, out / "predictions.json").to_dict())
    assert independent == pytest.approx(flat({k: v for k, v in got["scores"].items() if k != "n_pairs"}))
    recs = by_id(out)
    # boxes are the GT boxes exactly (inclusive mask extents: w = x2 - x1 + 1), with the engine's score
    assert recs["1_10"]["boxes"] == [{"bbox": [4.0, 4.0, 20.0, 16.0], "score": pytest.approx(0.9)}]
    assert recs["1_10"]["route"] == "agent" and recs["1_10"]["phrases"] == ["brown dog"]
    assert recs["1_1"]["route"] == "engine" and recs["1_1"]["turns"] == 0
    assert recs["1_1"]["boxes"] == [{"bbox": [4.0, 4.0, 20.0, 16.0], "score": pytest.approx(0.9)}]
    assert recs["1_15"]["boxes"] == [{"bbox": [0.0, 0.0, 64.0, 48.0], "score": pytest.approx(0.95)}]
    assert recs["2_2"]["status"] == "no_mask" and recs["2_2"]["boxes"] == []  # cat, straight to the engine
    assert recs["2_13"]["status"] == "no_mask" and recs["2_13"]["boxes"] == []  # report_no_mask emits nothing
    assert all(r["iou"] is None and r["query"] for r in recs.values())
    # image by image: with 3 pairs in flight, the engine never goes back more than one image
    image_of = {prepare_image(fx.images_dir / f"{i:06d}.jpg").digest: i for i in fx.image_ids}
    seen = [image_of[digest] for digest, _ in ENGINES[-1].calls]
    assert list(dict.fromkeys(seen)) == [1, 2, 3]
    assert all(max(seen[: k + 1]) - image_id <= 1 for k, image_id in enumerate(seen))


def test_categories_through_agent(fx: OmniLabelFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(ol_run(fx, out, "--categories-through-agent"), capsys)[0] == 0
    got = summary(out)
    assert got["routes"] == {"agent": 20, "engine": 0}
    assert {k: got["scores"][k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-7)
    assert by_id(out)["1_1"]["turns"] == 2
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["options"] == {"categories_through_agent": True}
    # the switch changes the protocol: resuming without it is refused
    code, _, err = run_cli(ol_run(fx, out), capsys)
    assert code == 2 and "options.categories_through_agent (true -> false)" in err


def test_failed_pairs_emit_nothing_and_count(fx: OmniLabelFixture, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("EVALS_TEST_FAIL", "brown dog")
    assert run_cli(ol_run(fx, out, "--max-consecutive-failures", "3"), capsys)[0] == 0
    got = summary(out)
    assert got["status"]["failed"] == 2 and by_id(out)["1_10"]["boxes"] == []
    # descr-S loses both of its ground truths: AP 0; descr: FP FP TP*5 over 7 GT
    assert got["scores"]["AP_descr_S"] == 0.0
    monkeypatch.delenv("EVALS_TEST_FAIL")
    assert run_cli(ol_run(fx, out), capsys)[0] == 0
    got = summary(out)
    assert got["status"]["failed"] == 0
    assert {k: got["scores"][k] for k in EXPECTED} == pytest.approx(EXPECTED, abs=1e-7)


def test_limit_selects_images(fx: OmniLabelFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli(ol_run(fx, out, "--limit", "1", "--save-overlays"), capsys)[0] == 0
    recs = by_id(out)
    assert {r["image_id"] for r in recs.values()} == {1} and len(recs) == 7
    got = summary(out)
    assert got["coverage"] == {"images": 1, "of": 3, "pairs": 7, "pairs_of": 20}
    # scored on image 1 only: descr-L is the bicycle false positive alone (no GT): AP undefined
    assert got["scores"]["AP_descr_L"] is None and got["scores"]["AP_categ"] == 100.0
    assert (out / "overlays" / "1_15.jpg").is_file()


def test_missing_images_are_named(fx: OmniLabelFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fx.images_dir / "000002.jpg").unlink()
    code, _, err = run_cli(ol_run(fx, tmp_path / "run"), capsys)
    assert code == 2 and "000002.jpg" in err and "--images" in err


def test_paper_preset_reports_sam3_predicted_boxes_on_both_routes(
        fx: OmniLabelFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``box_source="predicted"`` (the paper preset) emits the engine's predicted boxes, not the masks' boxes."""
    import sam3core.fake

    tight = sam3core.fake.mask_boxes_continuous
    inset = np.array([0.25, 0.5, -0.25, -0.5], np.float32)  # predicted boxes that differ from the masks'
    monkeypatch.setattr(sam3core.fake, "mask_boxes_continuous", lambda masks: tight(masks) + inset)
    out = tmp_path / "run"
    assert run_cli(ol_run(fx, out, "--preset", "paper"), capsys)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["agent"]["box_source"] == "predicted"
    recs = by_id(out)
    # GT box [4, 4, 20, 16] as a mask; its predicted box [4.25, 4.5, 23.75, 19.5] gives w = x2 - x1
    want = [{"bbox": [4.25, 4.5, 19.5, 15.0], "score": pytest.approx(0.9)}]
    assert recs["1_10"]["route"] == "agent" and recs["1_10"]["boxes"] == want
    assert recs["1_1"]["route"] == "engine" and recs["1_1"]["boxes"] == want
    assert recs["2_2"]["boxes"] == [] and recs["2_13"]["boxes"] == []

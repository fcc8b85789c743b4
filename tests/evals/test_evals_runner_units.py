"""Unit tests of the runner's parts: manifest diff, the sample log, shards, box conversion, summary text."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from evals.records import detection_boxes, mask_box_xywh, predicted_box_xywh, xyxy_to_xywh
from evals.run_options import Shard, parse_shard
from evals.rundir import RunDirError, RunPaths, SampleLog, latest_by_id, manifest_diff
from evals.summary import Column, comparison_table, render_markdown, run_statistics


def test_manifest_diff_names_nested_and_missing_keys_and_ignores_info() -> None:
    old = {"agent": {"max_llm_calls": 40, "sampling": {"seed": 0}}, "shard": None, "info": {"started": "a"}}
    new = {"agent": {"max_llm_calls": 100, "sampling": {"seed": 0}}, "shard": {"index": 0, "count": 2},
           "info": {"started": "b"}, "extra": 1}
    assert manifest_diff(old, new) == ["agent.max_llm_calls (40 -> 100)", "extra ((absent) -> 1)",
                                       'shard (null -> {"index": 0, "count": 2})']
    assert manifest_diff(old, old) == []
    assert manifest_diff(old, new, ignore=("info", "shard", "agent", "extra")) == []


def test_sample_log_cuts_a_torn_last_line_only_when_repairing(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    log = SampleLog(path)
    log.append({"id": "a", "status": "answered"})
    log.append({"id": "b", "status": "failed"})
    log.append({"id": "b", "status": "answered"})
    log.close()
    good = path.read_bytes()
    path.write_bytes(good + b'{"id": "c", "sta')
    with pytest.raises(RunDirError, match="line 4"):
        SampleLog(path).load(repair=False)
    assert path.read_bytes() == good + b'{"id": "c", "sta'
    recs = SampleLog(path).load()
    assert [r["id"] for r in recs] == ["a", "b", "b"] and path.read_bytes() == good
    assert latest_by_id(recs)["b"]["status"] == "answered"
    path.write_bytes(good + b'{"id": "c"}')  # valid JSON but no newline: the write may have been cut
    assert [r["id"] for r in SampleLog(path).load()] == ["a", "b", "b"] and path.read_bytes() == good


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    paths.masks.mkdir()
    (paths.masks / ".x.png.123.tmp").write_bytes(b"partial")
    (paths.masks / "x.png").write_bytes(b"done")
    assert paths.remove_stale_temporaries() == 1
    assert [p.name for p in paths.masks.iterdir()] == ["x.png"]


def test_shards_are_disjoint_and_cover_everything() -> None:
    items = [f"s{i:02d}" for i in range(11)]
    shards = [parse_shard(f"{i}/3") for i in range(3)]
    assert shards[1] == Shard(1, 3) and shards[1].select(items) == ["s01", "s04", "s07", "s10"]
    assert sorted(x for s in shards for x in s.select(items)) == items
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(bad)


def test_boxes_use_inclusive_pixel_extents() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert mask_box_xywh(mask) == [3.0, 2.0, 6.0, 3.0]
    assert mask_box_xywh(np.zeros((4, 4), bool)) is None
    assert xyxy_to_xywh(np.array([3, 2, 8, 4])) == [3.0, 2.0, 6.0, 3.0]
    # SAM 3's predicted boxes are continuous: the same pixels span [3, 9) x [2, 5)
    assert predicted_box_xywh(np.array([3, 2, 9, 5])) == [3.0, 2.0, 6.0, 3.0]


def _answer() -> sv.Detections:
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[2, 0:1, 0:2] = True  # masks[1] is empty: skipped whatever the box source
    return sv.Detections(xyxy=sv.mask_to_xyxy(masks).astype(np.float32), mask=masks,
                         confidence=np.array([0.9, 0.8, 0.7], np.float32),
                         data={"predicted_xyxy": np.array([[2.5, 1.5, 9.25, 5.0], [0, 0, 1, 1], [0, 0, 2.5, 1]],
                                                          np.float32)})


def test_detection_boxes_from_masks_or_predicted_boxes() -> None:
    det = _answer()
    assert detection_boxes(det) == detection_boxes(det, box_source="mask") == [
        {"bbox": [3.0, 2.0, 6.0, 3.0], "score": pytest.approx(0.9)},
        {"bbox": [0.0, 0.0, 2.0, 1.0], "score": pytest.approx(0.7)}]
    assert detection_boxes(det, box_source="predicted") == [
        {"bbox": [2.5, 1.5, 6.75, 3.5], "score": pytest.approx(0.9)},
        {"bbox": [0.0, 0.0, 2.5, 1.0], "score": pytest.approx(0.7)}]
    # aligned after supervision's indexing, and an empty answer needs no boxes at all
    assert detection_boxes(det[[2, 0]], box_source="predicted")[0]["bbox"] == [0.0, 0.0, 2.5, 1.0]
    assert detection_boxes(sv.Detections.empty(), box_source="predicted") == []


def test_detection_boxes_predicted_without_boxes_is_a_clear_error() -> None:
    det = _answer()
    det.data = {}
    with pytest.raises(ValueError, match=r"predicted_xyxy.*found none.*box_source='mask'"):
        detection_boxes(det, box_source="predicted")
    det.data = {"predicted_xyxy": np.zeros((2, 4), np.float32)}
    with pytest.raises(ValueError, match=r"found shape \(2, 4\)"):
        detection_boxes(det, box_source="predicted")
    with pytest.raises(ValueError, match="unknown box_source"):
        detection_boxes(det, box_source="boxes")  # type: ignore[arg-type]


def test_summary_text_counts_failed_samples() -> None:
    recs = [{"status": "answered", "turns": 3, "failures": {"bad_ids": 1}, "tokens": {"prompt": 10, "completion": 2,
                                                                                       "total": 12}, "seconds": 1.0},
            {"status": "failed", "turns": 0, "failures": {}, "tokens": {}, "seconds": 0.5}]
    stats = run_statistics(recs)
    assert stats["status"] == {"answered": 1, "no_mask": 0, "budget_exhausted": 0, "failed": 1}
    assert stats["turns"] == {"total": 3, "mean": 1.5} and stats["tokens"]["total"] == 12
    table = comparison_table([Column("gIoU val", 61.0, "reasonseg_val")], "ours")
    summary = {"dataset": "reasonseg", "split": "val", "table": table, "scores": {"giou": 61.0}, **stats,
               "timing": {"sample_seconds_total": 1.5, "sample_seconds_mean": 0.75, "llm_seconds_total": 0.0,
                          "sam_seconds_total": 0.0}}
    text = render_markdown(summary)
    assert "| ours | 61.0 |" in text and "| prior best (LISA-13B / REAL) | 65.0 |" in text
    assert "answered 1" in text and "failed 1" in text and "scored as empty predictions" in text
    assert comparison_table([Column("AP categ", 50.0, None)], "ours")["rows"] == [
        {"method": "ours", "source": "this run", "values": [50.0]}]

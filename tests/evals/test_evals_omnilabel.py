"""OmniLabel pooled-AP tests: hand-computed answers plus an independent re-implementation.

COCO's AP at one IoU threshold, as used here: rank the detections by score, precision is made
monotone from the right, and it is read at 101 recall points r = 0, 0.01, ..., 1 (the first
detection whose recall is >= r; 0 when no detection reaches r); AP is their mean. With boxes that
either coincide with a ground truth (IoU 1) or miss everything (IoU 0), all 10 IoU thresholds agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals import omnilabel as ol
from evals.errors import EvalInputError
from evals.fixtures import make_omnilabel, omnilabel_gt

HIT = [0, 0, 10, 10]
MISS = [50, 50, 10, 10]


def descr(i: int, text: str, image_ids: list[int], category: bool = False) -> dict[str, Any]:
    kind = "object_category" if category else "object_description"
    return {"id": i, "text": text, "image_ids": image_ids, "anno_info": {"type": kind}}


def gt_json(descriptions: list[dict[str, Any]], annotations: list[dict[str, Any]],
            image_ids: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    return {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in image_ids],
            "descriptions": descriptions, "annotations": annotations}


def box(image_id: int, bbox: list[float], ids: list[int], crowd: int = 0) -> dict[str, Any]:
    return {"image_id": image_id, "bbox": bbox, "description_ids": ids, "iscrowd": crowd}


def det(image_id: int, bbox: list[float], ids: list[int], scores: list[float]) -> dict[str, Any]:
    return {"image_id": image_id, "bbox": bbox, "description_ids": ids, "scores": scores}


def score(gt: dict[str, Any], preds: list[dict[str, Any]]) -> ol.OmniLabelScores:
    return ol.evaluate(ol.parse_gt(gt), ol.parse_predictions(preds))


# ----------------------------------------------------------------------------- hand-computed


def test_pooling_across_pairs_differs_from_mean_per_description() -> None:
    gt = gt_json([descr(1, "red car", [1]), descr(2, "blue car", [2])],
                 [box(1, HIT, [1]), box(2, HIT, [2])])
    preds = [det(1, MISS, [1], [0.9]), det(1, HIT, [1], [0.8]), det(2, HIT, [2], [0.95])]
    # Per description: "red car" FP(.9), TP(.8) -> precision 0.5 at every recall point -> AP 0.5;
    # "blue car" TP -> 1.0; their mean would be 0.75.
    # Pooled: TP(.95), FP(.9), TP(.8) with 2 GT: recall .5, .5, 1; precision 1, .5, 2/3 -> monotone
    # 1, 2/3, 2/3. Points r = 0..0.50 (51 of them) read 1, r = 0.51..1 (50) read 2/3:
    # AP = (51 + 50 * 2/3) / 101 = 253/303.
    s = score(gt, preds)
    assert s.ap["descr"] == pytest.approx(253 / 303, abs=1e-9)
    assert s.n_gt["descr"] == 2
    red = score(gt_json([descr(1, "red car", [1])], [box(1, HIT, [1])]), preds)
    blue = score(gt_json([descr(2, "blue car", [2])], [box(2, HIT, [2])]), preds)
    assert (red.ap["descr"], blue.ap["descr"]) == (pytest.approx(0.5, abs=1e-9), pytest.approx(1.0, abs=1e-9))


def test_false_positives_on_negative_descriptions_lower_ap() -> None:
    gt = gt_json([descr(1, "red car", [1]), descr(2, "blue car", [1])], [box(1, HIT, [1])], image_ids=(1,))
    tp = det(1, HIT, [1], [0.8])
    assert score(gt, [tp]).ap["descr"] == pytest.approx(1.0, abs=1e-9)
    # "blue car" is a negative (Dn) of image 1: its detection (score .9, on the red car's box even)
    # ranks first as a false positive: FP, TP -> precision 0.5 at every recall point -> AP 0.5.
    s = score(gt, [det(1, HIT, [2], [0.9]), tp])
    assert s.ap["descr"] == pytest.approx(0.5, abs=1e-9)
    assert s.ap["descr_pos"] == pytest.approx(1.0, abs=1e-9)  # Dn pairs are not in descr-pos
    assert s.n_pairs == {"categ": 0, "descr": 2, "descr_pos": 1, "descr_S": 2, "descr_M": 0, "descr_L": 0}


def test_word_count_groups() -> None:
    texts = {1: "a red car", 2: "a red car parked", 3: "one two three four five six seven eight",
             4: "one two three four five six seven eight nine"}
    gt = gt_json([descr(i, t, [1]) for i, t in texts.items()], [box(1, HIT, [1, 2, 3, 4])], image_ids=(1,))
    s = score(gt, [det(1, HIT, [1, 4], [0.9, 0.9])])
    assert s.n_gt == {"categ": 0, "descr": 4, "descr_pos": 4, "descr_S": 1, "descr_M": 2, "descr_L": 1}
    # S (3 words) and L (9 words) are found: AP 1. M (4 and 8 words) has no detection: AP 0.
    assert s.ap["descr_S"] == pytest.approx(1.0, abs=1e-9)
    assert s.ap["descr_M"] == 0.0
    assert s.ap["descr_L"] == pytest.approx(1.0, abs=1e-9)
    # descr pools 2 TPs over 4 GT: recall .25, .5 at precision 1 -> 51 points of 1, 50 of 0.
    assert s.ap["descr"] == pytest.approx(51 / 101, abs=1e-9)
    assert ol.Description(5, "  x   y\tz ", False, (1,)).num_words == 3  # len(text.split())
    assert ol.pair_groups("Dn", 3) == ["descr", "descr_S"]
    assert ol.pair_groups("Dn", 4) == ["descr", "descr_M"]
    assert ol.pair_groups("Dp", 8) == ["descr", "descr_pos", "descr_M"]
    assert ol.pair_groups("Dp", 9) == ["descr", "descr_pos", "descr_L"]
    assert ol.pair_groups("C", 12) == ["categ"]


def test_crowd_boxes_ignored() -> None:
    crowd = [20, 0, 10, 10]
    gt = gt_json([descr(1, "dog", [1], category=True)], [box(1, HIT, [1]), box(1, crowd, [1], crowd=1)],
                 image_ids=(1,))
    # The top detection lies on the crowd box: matched to it, hence ignored (not a FP); the crowd
    # box is not counted as ground truth (n_gt 1). Remaining: one TP -> AP 1.
    s = score(gt, [det(1, crowd, [1], [0.95]), det(1, HIT, [1], [0.9])])
    assert s.n_gt["categ"] == 1
    assert s.ap["categ"] == pytest.approx(1.0, abs=1e-9)
    # Without the crowd flag that box is a missed GT: TP at recall .5 -> 51 points of 1 -> 51/101.
    gt["annotations"][1]["iscrowd"] = 0
    assert score(gt, [det(1, HIT, [1], [0.9])]).ap["categ"] == pytest.approx(51 / 101, abs=1e-9)


def test_at_most_100_detections_per_pair() -> None:
    gt = gt_json([descr(1, "dog", [1], category=True)], [box(1, HIT, [1])], image_ids=(1,))
    misses = [det(1, MISS, [1], [0.9]) for _ in range(99)]
    # 99 FPs then the TP (100th detection): precision 1/100 at recall 1 -> AP 0.01.
    assert score(gt, [*misses, det(1, HIT, [1], [0.5])]).ap["categ"] == pytest.approx(0.01, abs=1e-9)
    # A 101st detection is cut off: the TP ranked last is never seen -> AP 0.
    assert score(gt, [*misses, det(1, MISS, [1], [0.9]), det(1, HIT, [1], [0.5])]).ap["categ"] == 0.0


def test_harmonic_mean_headline() -> None:
    gt = gt_json([descr(1, "dog", [1], category=True), descr(2, "a brown dog", [1])],
                 [box(1, HIT, [1, 2])], image_ids=(1,))
    # categ: FP(.9), TP(.8) -> 0.5; descr: TP -> 1. Headline 2*0.5*1 / (0.5 + 1 + 1e-5).
    s = score(gt, [det(1, MISS, [1], [0.9]), det(1, HIT, [1, 2], [0.8, 0.8])])
    assert s.ap["categ"] == pytest.approx(0.5, abs=1e-9)
    assert s.headline == pytest.approx(1.0 / 1.50001, abs=1e-9)
    assert s.to_dict()["AP"] == pytest.approx(100.0 / 1.50001, abs=1e-7)


def test_group_without_ground_truth_is_none() -> None:
    gt = gt_json([descr(1, "dog", [1], category=True), descr(2, "a purple elephant", [1])],
                 [box(1, HIT, [1])], image_ids=(1,))
    s = score(gt, [det(1, HIT, [1, 2], [0.9, 0.9])])
    assert s.ap["categ"] == pytest.approx(1.0, abs=1e-9)
    assert s.ap["descr"] is None and s.n_gt["descr"] == 0 and s.n_pairs["descr"] == 1
    assert s.headline is None
    d = s.to_dict()
    assert d["AP"] is None and d["AP_descr"] is None and d["AP_descr_L"] is None
    assert d["n_gt"]["categ"] == 1


def test_detections_outside_label_space_ignored() -> None:
    gt = gt_json([descr(1, "dog", [1], category=True), descr(2, "cat", [2], category=True)],
                 [box(1, HIT, [1]), box(2, HIT, [2])])
    # "cat" is not in image 1's label space and image 9 does not exist: both ignored, AP stays 1.
    preds = [det(1, HIT, [1, 2], [0.5, 0.99]), det(2, HIT, [2], [0.5]), det(9, HIT, [1], [0.99])]
    s = score(gt, preds)
    assert s.ap["categ"] == pytest.approx(1.0, abs=1e-9)
    assert (s.n_detections, s.n_ignored) == (2, 2)


def test_no_predictions_gives_zero_ap() -> None:
    s = score(omnilabel_gt(), [])
    assert all(s.ap[g] == 0.0 for g in ol.GROUPS)
    assert s.headline == 0.0


def test_pycocotools_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    score(omnilabel_gt(), [det(1, HIT, [1], [0.5])])
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- fixture


def test_fixture_pair_types_counts_and_perfect_predictions(tmp_path: Path) -> None:
    fx = make_omnilabel(tmp_path)
    gt = ol.load_gt(fx.gt_path)
    assert gt.label_spaces[2] == (1, 2, 3, 10, 12, 13, 14)
    types = {(i, d): t for i, d, t in gt.pairs()}
    assert types[1, 14] == "Dp" and types[2, 14] == "Dn" and types[2, 2] == "C" and types[3, 15] == "Dn"
    assert gt.pair_type(1, 10) == "Dp"
    s = ol.evaluate(gt, ol.parse_predictions(fx.perfect_predictions()))
    assert s.n_gt == {"categ": 6, "descr": 7, "descr_pos": 7, "descr_S": 2, "descr_M": 3, "descr_L": 2}
    assert all(s.ap[g] == pytest.approx(1.0, abs=1e-12) for g in ol.GROUPS)
    assert fx.boxes(1, 1) == [[4, 4, 20, 16]] and len(fx.boxes(1, 1, crowd=True)) == 2
    masks = fx.box_masks(3, 12)
    assert len(masks) == 1 and masks[0].shape == (48, 64) and int(masks[0].sum()) == 12 * 28
    assert sorted(p.name for p in fx.images_dir.iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]


def test_write_and_load_predictions_round_trip(tmp_path: Path) -> None:
    dets = [ol.Detection(image_id=1, bbox=(1.0, 2.0, 3.0, 4.0), description_id=7, score=0.5)]
    ol.write_predictions(tmp_path / "p.json", dets)
    assert ol.load_predictions(tmp_path / "p.json") == dets


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalInputError, match="not found"):
        ol.load_gt(tmp_path / "missing.json")
    with pytest.raises(EvalInputError, match="annotations"):
        ol.parse_gt({"images": [], "descriptions": []}, "gt.json")
    with pytest.raises(EvalInputError, match="record 0"):
        ol.parse_predictions([det(1, HIT, [1, 2], [0.5])], "p.json")
    with pytest.raises(EvalInputError, match="JSON list"):
        ol.parse_predictions({"annotations": []}, "p.json")


# ----------------------------------------------------------------------------- independent check


def _iou(d: list[float], g: list[float], crowd: bool) -> float:
    iw = max(0.0, min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0]))
    ih = max(0.0, min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1]))
    inter = iw * ih
    denom = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / denom if denom > 0 else 0.0


def reference_ap(gt: dict[str, Any], preds: list[dict[str, Any]],
                 member: Callable[[str, int], bool]) -> float | None:
    """Plain-Python pooled AP written from the protocol text (no pycocotools)."""
    images = sorted(i["id"] for i in gt["images"])
    descrs = gt["descriptions"]
    thresholds = np.linspace(0.5, 0.95, 10)
    scores: list[float] = []
    matched: list[list[int]] = []  # per detection, per threshold: 1 TP, 0 FP, -1 ignored
    n_gt = 0
    for img in images:
        anns = [a for a in gt["annotations"] if a["image_id"] == img]
        positives = {d for a in anns for d in a["description_ids"]}
        for dd in descrs:
            if img not in dd["image_ids"]:
                continue
            kind = "C" if dd["anno_info"]["type"] != "object_description" else (
                "Dp" if dd["id"] in positives else "Dn")
            if not member(kind, len(dd["text"].split())):
                continue
            gts = [(a["bbox"], bool(a["iscrowd"])) for a in anns if dd["id"] in a["description_ids"]]
            gts = [g for g in gts if not g[1]] + [g for g in gts if g[1]]
            n_gt += sum(not c for _, c in gts)
            dts = [(p["bbox"], s) for p in preds if p["image_id"] == img
                   for d, s in zip(p["description_ids"], p["scores"], strict=True) if d == dd["id"]]
            dts = sorted(dts, key=lambda x: -x[1])[:100]
            results = [[0] * len(thresholds) for _ in dts]
            for t, thr in enumerate(thresholds):
                taken = [False] * len(gts)
                for k, (b, _) in enumerate(dts):
                    best, m = min(thr, 1 - 1e-10), -1
                    for gi, (g, crowd) in enumerate(gts):
                        if taken[gi] and not crowd:
                            continue
                        if m > -1 and not gts[m][1] and crowd:
                            break
                        v = _iou(b, g, crowd)
                        if v >= best:
                            best, m = v, gi
                    if m > -1:
                        taken[m] = True
                        results[k][t] = -1 if gts[m][1] else 1
            scores += [s for _, s in dts]
            matched += results
    if n_gt == 0:
        return None
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    aps = []
    for t in range(len(thresholds)):
        seq = [matched[i][t] for i in order if matched[i][t] != -1]
        tp = np.cumsum([v == 1 for v in seq])
        fp = np.cumsum([v == 0 for v in seq])
        rc = tp / n_gt
        pr = list(tp / np.maximum(tp + fp, np.spacing(1)))
        for i in range(len(pr) - 1, 0, -1):
            pr[i - 1] = max(pr[i - 1], pr[i])
        rec_points = np.linspace(0.0, 1.0, 101)
        idx = np.searchsorted(rc, rec_points, side="left")
        aps.append(np.mean([pr[i] if i < len(pr) else 0.0 for i in idx]))
    return float(np.mean(aps))


MEMBERS: dict[str, Callable[[str, int], bool]] = {
    "categ": lambda k, n: k == "C",
    "descr": lambda k, n: k != "C",
    "descr_pos": lambda k, n: k == "Dp",
    "descr_S": lambda k, n: k != "C" and n <= 3,
    "descr_M": lambda k, n: k != "C" and 4 <= n <= 8,
    "descr_L": lambda k, n: k != "C" and n >= 9,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_implementation_on_jittered_predictions(seed: int) -> None:
    gt = omnilabel_gt()
    rng = np.random.default_rng(seed)
    preds = []
    label_space = {i["id"]: [d["id"] for d in gt["descriptions"] if i["id"] in d["image_ids"]]
                   for i in gt["images"]}
    for a in gt["annotations"]:  # jittered copies of every box (crowd ones too), for random ids
        for _ in range(3):
            b = [float(v + rng.normal(0, 2.0)) for v in a["bbox"]]
            b[2], b[3] = abs(b[2]), abs(b[3])
            ids = sorted(rng.choice(label_space[a["image_id"]], size=2, replace=False).tolist())
            preds.append(det(a["image_id"], b, ids, rng.choice([0.3, 0.5, 0.7, 0.9], size=2).tolist()))
    s = score(gt, preds)
    for g in ol.GROUPS:
        expected = reference_ap(gt, preds, MEMBERS[g])
        assert s.ap[g] == pytest.approx(expected, abs=1e-9), g

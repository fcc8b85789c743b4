"""ReasonSeg metric and dataset tests; every expected number is computed by hand in a comment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evals import reasonseg as rs
from evals.errors import EvalInputError
from evals.fixtures import ReasonSegFixture, make_reasonseg

EPS = 1e-5


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> ReasonSegFixture:
    return make_reasonseg(tmp_path_factory.mktemp("reasonseg"))


def _rect(label: str, x0: float, y0: float, x1: float, y1: float) -> rs.Shape:
    return rs.Shape(label=label, points=((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


# ----------------------------------------------------------------------------- per-sample IoU


def test_ignore_pixels_excluded_from_prediction_and_target() -> None:
    target = np.zeros((4, 4), np.uint8)
    target[0, :2] = 1
    target[0, 2:] = 255
    pred = np.zeros((4, 4), bool)
    pred[0, :] = True
    pred[1, 0] = True
    # Predicted pixels outside ignore: (0,0), (0,1), (1,0) -> 3; target 2; I = 2, U = 3.
    score = rs.score_mask(pred, target)
    assert (score.intersection, score.union) == (2, 3)
    assert score.iou == pytest.approx(2 / (3 + EPS), abs=1e-12)


def test_empty_target_and_empty_prediction_is_one() -> None:
    score = rs.score_mask(np.zeros((3, 5), bool), np.zeros((3, 5), np.uint8))
    assert (score.intersection, score.union, score.iou) == (0, 0, 1.0)
    acc = rs.ReasonSegAccumulator()
    acc.add(score, is_sentence=False)
    assert acc.result().to_dict()["giou"] == 100.0


def test_prediction_only_on_ignore_pixels_counts_as_empty() -> None:
    target = np.full((2, 2), 255, np.uint8)
    assert rs.score_mask(np.ones((2, 2), bool), target).iou == 1.0


def test_empty_target_nonempty_prediction_is_zero() -> None:
    pred = np.zeros((3, 5), np.uint8)
    pred[1, 1] = 7  # any non-zero value is foreground
    score = rs.score_mask(pred, np.zeros((3, 5), np.uint8))
    assert (score.intersection, score.union, score.iou) == (0, 1, 0.0)


def test_instance_stack_is_unioned_and_empty_stack_is_empty() -> None:
    target = np.zeros((2, 3), np.uint8)
    target[0, 0] = 1
    stack = np.zeros((2, 2, 3), bool)
    stack[0, 0, 0] = True
    stack[1, 1, 2] = True
    assert rs.score_mask(stack, target) == rs.SampleScore(intersection=1, union=2)
    assert rs.score_mask(np.zeros((0, 2, 3), bool), target) == rs.SampleScore(intersection=0, union=1)
    with pytest.raises(ValueError, match="shape"):
        rs.score_mask(np.zeros((3, 2), bool), target)


def test_ciou_accumulates_over_samples_not_mean() -> None:
    acc = rs.ReasonSegAccumulator()
    acc.add(rs.SampleScore(1, 4), is_sentence=False, sample_id="a")
    acc.add(rs.SampleScore(9, 10), is_sentence=True, sample_id="b")
    acc.add(rs.SampleScore(0, 0), is_sentence=True, sample_id="c")
    # gIoU = (1/(4+1e-5) + 9/(10+1e-5) + 1) / 3; cIoU = (1+9+0) / (4+10+0 + 1e-10) = 10/14.
    giou = (1 / (4 + EPS) + 9 / (10 + EPS) + 1.0) / 3
    assert acc.giou == pytest.approx(giou, abs=1e-12)
    assert acc.ciou == pytest.approx(10 / 14, abs=1e-9)
    assert acc.n == 3
    res = acc.result()
    assert res.short == rs.SplitScore(giou=1 / (4 + EPS), ciou=1 / (4 + 1e-10), n=1)
    assert res.long.n == 2
    assert res.long.giou == pytest.approx((9 / (10 + EPS) + 1.0) / 2, abs=1e-12)
    assert res.long.ciou == pytest.approx(9 / 10, abs=1e-9)
    with pytest.raises(ValueError, match="already"):
        acc.add(rs.SampleScore(0, 0), is_sentence=False, sample_id="a")


def test_empty_accumulator_and_split_report_none() -> None:
    acc = rs.ReasonSegAccumulator()
    assert acc.giou is None and acc.ciou is None
    acc.add(rs.SampleScore(1, 2), is_sentence=False)
    d = acc.result().to_dict()
    assert d["long"] == {"giou": None, "ciou": None, "n": 0}
    assert d["short"]["n"] == 1 and d["n"] == 1


# ----------------------------------------------------------------------------- ground truth


def test_polygons_ordered_by_rasterized_pixel_count_outlines_included() -> None:
    # Thin "Ignore" rect x 0..30, y 0..1: pixel count 31*2 = 62 (geometric area only 30*1 = 30).
    # Target square x 0..6, y 0..6: 7*7 = 49 (geometric area 36). By pixel count the thin rect is
    # larger, so it is drawn first and the square overwrites the overlap (x 0..6, y 0..1 = 14 px):
    # target 49 px, ignore 62 - 14 = 48 px. (Ordering by geometric area would give 35 / 62.)
    shapes = [_rect("Ignore", 0, 0, 30, 1), _rect("target", 0, 0, 6, 6)]
    for order in (shapes, shapes[::-1]):
        gt = rs.rasterize_shapes(order, 20, 40)
        assert int((gt == 1).sum()) == 49
        assert int((gt == 255).sum()) == 48
        assert gt[0, 0] == 1 and gt[0, 7] == 255 and gt[6, 6] == 1 and gt[2, 7] == 0


def test_nested_polygons_smaller_overwrites(fx: ReasonSegFixture) -> None:
    sample = rs.load_sample(fx.sample("a_nested").image_path)
    gt = rs.gt_mask(sample)
    # Corners truncated to int: target 2..41 x 2..31 (40*30 = 1200), ignore 10..29 x 10..24
    # (20*15 = 300) inside it, target 15..22 x 14..19 (8*6 = 48) inside that; flag skipped.
    # target = 1200 - 300 + 48 = 948, ignore = 300 - 48 = 252.
    assert int((gt == 1).sum()) == 948
    assert int((gt == 255).sum()) == 252
    assert gt[14, 15] == 1 and gt[10, 10] == 255 and gt[2, 2] == 1 and gt[0, 0] == 0
    assert np.array_equal(gt, fx.sample("a_nested").gt)


def test_flag_skipped_by_exact_label_and_ignore_substring() -> None:
    full = (0, 0, 9, 9)
    assert not rs.rasterize_shapes([_rect("flag", *full), _rect("FLAG", *full)], 10, 10).any()
    # Only a label equal to "flag" is skipped (the reference compares label.lower() == "flag").
    assert int((rs.rasterize_shapes([_rect("flagpole", *full)], 10, 10) == 1).sum()) == 100
    assert int((rs.rasterize_shapes([_rect("to_IGNORE", 1, 1, 2, 2)], 10, 10) == 255).sum()) == 4


def test_no_polygon_is_empty_target(fx: ReasonSegFixture) -> None:
    sample = rs.load_sample(fx.sample("b_empty").image_path)
    assert sample.shapes == () and sample.is_sentence
    gt = rs.gt_mask(sample)
    assert gt.shape == (30, 40) and not gt.any()


def test_fixture_ground_truth_matches_opencv_rasterizer(fx: ReasonSegFixture) -> None:
    for s in fx.samples:
        assert np.array_equal(rs.gt_mask(rs.load_sample(s.image_path)), s.gt), s.id


# ----------------------------------------------------------------------------- reading


def test_cp1252_fallback(fx: ReasonSegFixture) -> None:
    raw = fx.sample("c_cp1252").json_path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    sample = rs.load_sample(fx.sample("c_cp1252").image_path)
    assert sample.query == "Which part of the café’s terrace would you sit in to read?"
    assert sample.texts[1] == "the café corner"


def test_exif_orientation_gives_opencv_size(fx: ReasonSegFixture) -> None:
    path = fx.sample("d_exif").image_path
    with Image.open(path) as im:
        assert im.size == (60, 40)  # stored landscape: width 60, height 40
    sample = rs.load_sample(path)
    assert (sample.height, sample.width) == (60, 40)  # oriented portrait (H, W)
    # Target x 4..13, y 30..49: 10*20 = 200 px; rows 40..49 exist only in the portrait frame.
    assert int((rs.gt_mask(sample) == 1).sum()) == 200


def test_load_samples_sorted_and_split(fx: ReasonSegFixture) -> None:
    samples = rs.load_samples(fx.root)
    assert [s.id for s in samples] == ["a_nested", "b_empty", "c_cp1252", "d_exif", "e_thin"]
    assert [s.split for s in samples] == ["short", "long", "long", "short", "short"]


def test_bad_dataset_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalInputError, match="not found"):
        rs.load_samples(tmp_path / "nope")
    with pytest.raises(EvalInputError, match=r"no \*\.jpg"):
        rs.load_samples(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
    with pytest.raises(EvalInputError, match=r"x\.json not found"):
        rs.load_samples(tmp_path)
    (tmp_path / "x.json").write_text('{"text": "a string", "is_sentence": false, "shapes": []}')
    with pytest.raises(EvalInputError, match="'text' must be"):
        rs.load_samples(tmp_path)
    (tmp_path / "x.json").write_bytes(b"\x81 not json")
    with pytest.raises(EvalInputError, match="not valid JSON"):
        rs.load_samples(tmp_path)


# ----------------------------------------------------------------------------- prediction folders


def _write_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_predictions(fx: ReasonSegFixture, pred_dir: Path) -> None:
    """Predictions with hand-computable scores (see test_score_prediction_dir)."""
    pred_dir.mkdir(parents=True, exist_ok=True)
    _write_mask(pred_dir / "a_nested.png", fx.sample("a_nested").target)  # perfect
    _write_mask(pred_dir / "c_cp1252.png", np.ones((24, 32), bool))  # whole image
    thin = np.zeros((20, 40), bool)
    thin[0:2, 0:31] = True
    thin[0:7, 0:7] = True
    _write_mask(pred_dir / "e_thin.png", thin)  # target + ignore pixels
    # b_empty and d_exif have no file: empty predictions.


def expected_dir_scores() -> dict[str, float]:
    # a_nested: I = U = 948.  b_empty: U = 0 -> 1.  c_cp1252: I = 50, U = 24*32 = 768.
    # d_exif: I = 0, U = 200.  e_thin: predicted 62 + 49 - 14 = 97 px, 48 of them ignore -> 49 = target.
    ious = {"a": 948 / (948 + EPS), "b": 1.0, "c": 50 / (768 + EPS), "d": 0.0, "e": 49 / (49 + EPS)}
    return {
        "giou": sum(ious.values()) / 5,
        "ciou": (948 + 50 + 49) / (948 + 768 + 200 + 49 + 1e-10),
        "short_giou": (ious["a"] + ious["d"] + ious["e"]) / 3,
        "short_ciou": (948 + 49) / (948 + 200 + 49 + 1e-10),
        "long_giou": (ious["b"] + ious["c"]) / 2,
        "long_ciou": 50 / (768 + 1e-10),
    }


def test_score_prediction_dir(fx: ReasonSegFixture, tmp_path: Path) -> None:
    write_predictions(fx, tmp_path / "pred")
    _write_mask(tmp_path / "pred" / "stray.png", np.ones((2, 2), bool))  # ignored with a warning
    report = rs.score_prediction_dir(fx.root, tmp_path / "pred")
    exp = expected_dir_scores()
    assert report.missing == ("b_empty", "d_exif")
    assert report.per_sample["e_thin"] == rs.SampleScore(49, 49)
    assert report.per_sample["d_exif"] == rs.SampleScore(0, 200)
    s = report.scores
    assert s.all.giou == pytest.approx(exp["giou"], abs=1e-9)
    assert s.all.ciou == pytest.approx(exp["ciou"], abs=1e-9)
    assert s.short.giou == pytest.approx(exp["short_giou"], abs=1e-9)
    assert s.short.ciou == pytest.approx(exp["short_ciou"], abs=1e-9)
    assert s.long.giou == pytest.approx(exp["long_giou"], abs=1e-9)
    assert s.long.ciou == pytest.approx(exp["long_ciou"], abs=1e-9)
    assert (s.all.n, s.short.n, s.long.n) == (5, 3, 2)


def test_size_mismatch_names_file_and_sizes(fx: ReasonSegFixture, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    _write_mask(pred / "d_exif.png", np.ones((40, 60), bool))  # stored (unrotated) size
    with pytest.raises(EvalInputError) as info:
        rs.score_prediction_dir(fx.root, pred)
    msg = str(info.value)
    assert "d_exif.png" in msg and "40x60 (HxW)" in msg and "60x40 (HxW)" in msg


def test_score_sample_in_memory(fx: ReasonSegFixture) -> None:
    sample = rs.load_sample(fx.sample("e_thin").image_path)
    assert rs.score_sample(sample, fx.sample("e_thin").objects[0]) == rs.SampleScore(49, 49)
    with pytest.raises(ValueError, match="20x40"):
        rs.score_sample(sample, np.zeros((40, 20), bool))


def test_prediction_png_modes(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255  # opaque black: alpha alone is not foreground
    rgba[1, 2, 1] = 9
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    mask = rs.read_prediction(tmp_path / "a.png", 2, 3)
    assert mask.tolist() == [[False, False, False], [False, False, True]]
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(EvalInputError, match=r"bad\.png"):
        rs.read_prediction(tmp_path / "bad.png", 2, 3)

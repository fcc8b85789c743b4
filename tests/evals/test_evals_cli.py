"""``python -m evals ... score``: JSON shapes, tables, and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evals import reasonseg
from evals.cli import build_parser, main
from evals.fixtures import ReasonSegFixture, make_omnilabel, make_reasonseg


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write_predictions(fx: ReasonSegFixture, pred_dir: Path) -> None:
    """a_nested perfect (IoU ~1), c_cp1252 the whole image (I 50, U 768), the rest missing."""
    pred_dir.mkdir(parents=True)
    Image.fromarray(fx.sample("a_nested").target.astype(np.uint8)).save(pred_dir / "a_nested.png")
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(pred_dir / "c_cp1252.png")


def test_reasonseg_score_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_reasonseg(tmp_path / "data")
    write_predictions(fx, tmp_path / "pred")
    argv = ["reasonseg", "score", "--data", str(fx.root), "--pred", str(tmp_path / "pred"), "--json"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    got = json.loads(out)
    assert set(got) == {"giou", "ciou", "n", "short", "long"}
    # IoUs: a 948/(948+1e-5), b 1 (empty/empty), c 50/(768+1e-5), d 0 (U 200), e 0 (U 49).
    ious = [948 / (948 + 1e-5), 1.0, 50 / (768 + 1e-5), 0.0, 0.0]
    assert got["giou"] == pytest.approx(100 * sum(ious) / 5, abs=1e-7)
    assert got["ciou"] == pytest.approx(100 * (948 + 50) / (948 + 768 + 200 + 49 + 1e-10), abs=1e-7)
    assert got["short"] == pytest.approx({"giou": 100 * ious[0] / 3, "n": 3,
                                          "ciou": 100 * 948 / (948 + 200 + 49 + 1e-10)}, abs=1e-7)
    assert got["long"] == pytest.approx({"giou": 100 * (1 + ious[2]) / 2, "n": 2,
                                         "ciou": 100 * 50 / (768 + 1e-10)}, abs=1e-7)
    lib = reasonseg.score_prediction_dir(fx.root, tmp_path / "pred").scores.to_dict()
    assert got == lib


def test_reasonseg_score_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_reasonseg(tmp_path / "data")
    write_predictions(fx, tmp_path / "pred")
    argv = ["reasonseg", "score", "--data", str(fx.root), "--pred", str(tmp_path / "pred")]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    giou = f"{100 * (948 / (948 + 1e-5) + 1.0 + 50 / (768 + 1e-5)) / 5:.2f}"
    assert any(line.split()[:3] == ["all", "5", giou] for line in out.splitlines())
    assert "missing predictions: 3" in out


def test_reasonseg_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reasonseg", "score", "--data", str(tmp_path / "nope"), "--pred", str(tmp_path)]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: dataset folder") and "Traceback" not in err
    fx = make_reasonseg(tmp_path / "data")
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "pred" / "a_nested.png")
    code, _, err = run_main(["reasonseg", "score", "--data", str(fx.root), "--pred", str(tmp_path / "pred")],
                            capsys)
    assert code == 2 and "a_nested.png is 3x3 (HxW)" in err


def test_omnilabel_score_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_omnilabel(tmp_path)
    preds = fx.perfect_predictions()
    preds.append({"image_id": 2, "bbox": [0, 0, 5, 5], "description_ids": [13], "scores": [0.95]})
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    argv = ["omnilabel", "score", "--gt", str(fx.gt_path), "--pred", str(tmp_path / "pred.json"), "--json"]
    code, out, _ = run_main(argv, capsys)
    assert code == 0
    got = json.loads(out)
    assert list(got) == ["AP", "AP_categ", "AP_descr", "AP_descr_pos", "AP_descr_S", "AP_descr_M",
                         "AP_descr_L", "n_gt"]
    # One FP on the negative "purple elephant" (S) of image 2 ranks first among 7 descr TPs:
    # precision 0, 1/2, 2/3, ..., 7/8 -> monotone 7/8 everywhere -> AP_descr = 87.5; descr_S has
    # 2 GT: FP then 2 TPs -> 2/3 everywhere. categ and descr_pos stay 100.
    assert got["AP_descr"] == pytest.approx(87.5, abs=1e-7)
    assert got["AP_descr_S"] == pytest.approx(200 / 3, abs=1e-7)
    assert got["AP_categ"] == pytest.approx(100.0, abs=1e-7)
    assert got["AP_descr_pos"] == pytest.approx(100.0, abs=1e-7)
    assert got["AP"] == pytest.approx(100 * 2 * 0.875 / (1.875 + 1e-5), abs=1e-7)
    assert got["n_gt"] == {"categ": 6, "descr": 7, "descr_pos": 7, "descr_S": 2, "descr_M": 3, "descr_L": 2}


def test_omnilabel_null_groups_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dog = {"id": 1, "text": "dog", "image_ids": [1], "anno_info": {"type": "object_category"}}
    gt = {"images": [{"id": 1, "file_name": "1.jpg"}], "descriptions": [dog],
          "annotations": [{"image_id": 1, "bbox": [0, 0, 4, 4], "description_ids": [1], "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text("[]")
    argv = ["omnilabel", "score", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")]
    code, out, _ = run_main([*argv, "--json"], capsys)
    got = json.loads(out)
    assert code == 0 and got["AP"] is None and got["AP_descr"] is None and got["AP_categ"] == 0.0
    code, out, _ = run_main(argv, capsys)
    assert code == 0 and "n/a" in out and "categ" in out


def test_omnilabel_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_omnilabel(tmp_path)
    (tmp_path / "pred.json").write_text('[{"image_id": 1}]')
    code, out, err = run_main(["omnilabel", "score", "--gt", str(fx.gt_path), "--pred",
                               str(tmp_path / "pred.json")], capsys)
    assert code == 2 and out == "" and "pred.json: record 0" in err and "Traceback" not in err


def test_parser_layout_allows_new_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["omnilabel", "score", "--gt", "g", "--pred", "p"])
    assert (args.group, args.command, args.json) == ("omnilabel", "score", False)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["reasonseg"])
    assert info.value.code == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    fx = make_reasonseg(tmp_path / "data")
    (tmp_path / "pred").mkdir()
    proc = subprocess.run([sys.executable, "-m", "evals", "reasonseg", "score", "--data", str(fx.root),
                           "--pred", str(tmp_path / "pred"), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    # All predictions empty: only b_empty (no target) scores 1 -> gIoU 20, cIoU 0.
    assert json.loads(proc.stdout) == {"giou": 20.0, "ciou": 0.0, "n": 5,
                                       "short": {"giou": 0.0, "ciou": 0.0, "n": 3},
                                       "long": {"giou": 50.0, "ciou": 0.0, "n": 2}}

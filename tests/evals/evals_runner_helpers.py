"""Helpers of the runner tests: CLI calls with the test backend, datasets, hand-computed scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evals.cli import main
from evals.fixtures import ReasonSegFixture, make_reasonseg

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# --overlap-iom off: the fixtures' ground-truth objects overlap and nest by design, and the expected
# scores below are worked out with every object's mask reaching the scripted model
RS_HOOK = ["--_fake-backend", "evals_runner_backend:reasonseg", "--no-progress", "--overlap-iom", "off"]
OL_HOOK = ["--_fake-backend", "evals_runner_backend:omnilabel", "--no-progress", "--overlap-iom", "off"]

# Per fixture sample: (intersection, union), with the scripted policy of evals_runner_backend.
EXPECTED_IU = {"a_nested": (948, 948), "b_empty": (0, 0), "c_cp1252": (50, 50), "d_exif": (200, 200),
               "e_thin": (49, 752)}
LONG = {"b_empty", "c_cp1252"}


def sample_iou(i: int, u: int) -> float:
    """ReasonSeg's sample IoU."""
    return 1.0 if u == 0 else i / (u + 1e-5)


def expected_reasonseg(iu: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """gIoU / cIoU in percent, overall and per short / long, for per-sample (I, U)."""

    def part(ids: list[str]) -> dict[str, Any]:
        ious = [sample_iou(*iu[i]) for i in ids]
        inter, union = sum(iu[i][0] for i in ids), sum(iu[i][1] for i in ids)
        return {"giou": 100 * sum(ious) / len(ids), "ciou": 100 * inter / (union + 1e-10), "n": len(ids)}

    out = part(sorted(iu))
    out["short"] = part(sorted(set(iu) - LONG))
    out["long"] = part(sorted(set(iu) & LONG))
    return out


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level with dotted keys (for ``pytest.approx``)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python -m evals`` in-process."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def rs_run(data: Path, out: Path, *extra: str) -> list[str]:
    """argv of ``reasonseg run`` with the test backend."""
    return ["reasonseg", "run", "--data", str(data), "--out", str(out), *RS_HOOK, *extra]


def replicate(fx: ReasonSegFixture, copies: int) -> list[str]:
    """Add ``copies`` copies of every sample (``<id>_k``) to the fixture folder; return all ids."""
    for s in fx.samples:
        for k in range(1, copies + 1):
            shutil.copyfile(s.image_path, fx.root / f"{s.id}_{k}.jpg")
            shutil.copyfile(s.json_path, fx.root / f"{s.id}_{k}.json")
    return sorted(p.stem for p in fx.root.glob("*.jpg"))


def big_reasonseg(root: Path, copies: int = 3) -> tuple[ReasonSegFixture, list[str]]:
    """The fixture with ``copies`` extra copies of each sample."""
    fx = make_reasonseg(root)
    return fx, replicate(fx, copies)


def records(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of ``samples.jsonl``."""
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text("utf-8").splitlines()]


def by_id(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Records by id (asserting one line per id)."""
    recs = records(run_dir)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), f"duplicated ids in samples.jsonl: {ids}"
    return {r["id"]: r for r in recs}


def summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` without its clock-dependent part."""
    data = json.loads((run_dir / "summary.json").read_text("utf-8"))
    data.pop("timing")
    return data


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without clock-dependent fields."""
    return {k: v for k, v in record.items() if k not in ("seconds", "timings")}


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a ``python -m evals`` subprocess that can import the test backend."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def evals_process(argv: list[str], **env: str) -> subprocess.Popen[bytes]:
    """Start ``python -m evals ARGV`` as a subprocess (stdout/stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "evals", *argv], cwd=REPO, env=subprocess_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

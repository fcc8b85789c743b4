"""``sam3agent batch``: records, masks and summary; killed and resumed; lock, manifest and bad inputs.

The model is a scripted OpenAI-compatible server reached through the real client and flags; SAM 3 is
the fake engine of ``batch_backend`` (``--_fake-backend``), except in the one test that loads the
tiny random SAM 3 through ``--sam3``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sam3agent.app import batch
from sam3agent.app.cli import main
from sam3agent.app.selftest import scripted_policy
from sam3agent.llm.server import ScriptedOpenAIServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOOK = ["--_fake-backend", "batch_backend:fake_engine"]
COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 210), (0, 0, 0)]  # the black one: nothing found


@pytest.fixture
def endpoint() -> Iterator[ScriptedOpenAIServer]:
    """Segment ``target``, examine (mask 2 rejected), select mask 1; nothing found: report no mask."""
    with ScriptedOpenAIServer(scripted_policy("target"), models=["scripted"]) as server:
        yield server


def quick_policy(body: dict[str, Any]) -> str:
    """Segment ``target``, then select every mask found (or report none): two calls per pair."""
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else " ".join(str(p.get("text", "")) for p in last)
    match = re.search(r"found (\d+) mask", text)
    if match:
        ids = list(range(1, int(match.group(1)) + 1))
        return f'<tool>{{"name": "select_masks_and_return", "parameters": {{"final_answer_masks": {ids}}}}}</tool>'
    if "found nothing" in text:
        return '<tool>{"name": "report_no_mask", "parameters": {}}</tool>'
    return '<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "target"}}</tool>'


def write_pairs(folder: Path, lines: list[Any]) -> Path:
    """Four pictures (the last one black) and a pairs file of ``lines`` (dicts as JSON, strings as is)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for k, color in enumerate(COLORS):
        Image.new("RGB", (64, 48), color).save(folder / "img" / f"{k}.png")
    path = folder / "pairs.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
    return path


def many_pairs(n: int) -> list[dict[str, str]]:
    return [{"id": f"p{k:03d}", "image": f"img/{k % len(COLORS)}.png", "query": f"the thing number {k}"}
            for k in range(n)]


def argv(pairs: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["batch", str(pairs), "--out", str(out), *HOOK, "--llm-base-url", url, "--model", "scripted",
            "--llm-retries", "0", *extra]


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text("utf-8").splitlines()]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    return env


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sam3agent.cli", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the batch ended before it was killed: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout} s")


@pytest.fixture
def quick_endpoint() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(quick_policy, models=["scripted"]) as server:
        yield server


def test_killed_batch_resumes_to_exactly_200_records(tmp_path: Path, quick_endpoint: ScriptedOpenAIServer) -> None:
    endpoint = quick_endpoint
    pairs = write_pairs(tmp_path, many_pairs(200))
    out = tmp_path / "run"
    args = argv(pairs, out, endpoint.base_url, "--concurrency", "4")
    endpoint.latency = 0.1  # slow enough to be killed mid-run
    proc = start(args)
    try:
        wait_for_lines(out / "samples.jsonl", 10, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    partial = {r["id"]: r for r in records(out)}
    assert 10 <= len(partial) < 200 and not (out / "summary.json").exists()
    endpoint.latency = 0.0
    resumed = start(args)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    final = records(out)
    ids = [r["id"] for r in final]
    assert len(final) == 200 and len(set(ids)) == 200 and set(ids) == {f"p{k:03d}" for k in range(200)}
    for r in final:
        if r["id"] in partial:
            assert r == partial[r["id"]]  # a finished pair is never run again
        black = r["image"] == f"img/{len(COLORS) - 1}.png"
        assert r["status"] == ("no_mask" if black else "answered") and r["n_masks"] == (0 if black else 2)
        assert (out / r["mask_file"]).is_file()
    text = stdout.decode()
    assert f"{200 - len(partial)} run now, {len(partial)} finished before" in text
    assert "status   answered 150, no_mask 50, budget_exhausted 0, failed 0" in text
    assert not list(out.glob(".*.tmp")) and not list((out / "masks").glob(".*.tmp"))


def test_records_masks_and_summary(tmp_path: Path, endpoint: ScriptedOpenAIServer,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path, [
        {"id": "red", "image": "img/0.png", "query": "the red thing"},
        {"image": str(tmp_path / "img" / "1.png"), "query": "an absolute path", "note": "ignored"},
        {"id": "dark", "image": "img/3.png", "query": "something in the dark"},
        "",
        {"id": "broken", "image": "img/broken.png", "query": "a file that is no image"},
    ])
    (tmp_path / "img" / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "run"
    assert main(argv(pairs, out, endpoint.base_url, "--save-overlays")) == 1  # one pair failed
    printed = capsys.readouterr().out
    got = {r["id"]: r for r in records(out)}
    assert sorted(got) == ["2", "broken", "dark", "red"]  # the second line has no id: its line number
    red = got["red"]
    assert red["status"] == "answered" and red["iou"] is None and red["image"] == "img/0.png" and red["line"] == 1
    assert red["phrases"] == ["target"] and red["n_masks"] == 1 and red["mask_file"] == "masks/red.png"
    png = np.asarray(Image.open(out / "masks" / "red.png"))
    left = np.zeros((48, 64), bool)
    left[:, :21] = True
    assert png.shape == (48, 64) and np.array_equal(png == 1, left) and set(np.unique(png)) == {0, 1}
    from evals.records import rle_mask

    assert np.array_equal(rle_mask(red["mask_rle"]), left)
    assert np.array_equal(rle_mask(red["detections"][0]["rle"]), left) and red["detections"][0]["phrase"] == "target"
    assert got["dark"]["status"] == "no_mask" and not np.asarray(Image.open(out / "masks" / "dark.png")).any()
    broken = got["broken"]
    assert broken["status"] == "failed" and broken["error"].startswith("ValueError: ") and broken["mask_file"] is None
    assert not (out / "masks" / "broken.png").exists() and (out / "overlays" / "red.jpg").is_file()
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["status"] == {"answered": 2, "no_mask": 1, "budget_exhausted": 0, "failed": 1}
    assert summary["n_samples"] == 4 and summary["n_masks"] == 2 and summary["timing"]["this_run"]["pairs_run"] == 4
    assert (out / "index.html").is_file()
    assert "status   answered 2, no_mask 1, budget_exhausted 0, failed 1" in printed
    assert f"records  {out.resolve() / 'samples.jsonl'}" in printed and "rerun the same command" in printed
    # the rerun retries only the failed pair (it fails again) and keeps one line per id
    assert main(argv(pairs, out, endpoint.base_url, "--save-overlays")) == 1
    assert "1 run now, 3 finished before" in capsys.readouterr().out
    again = records(out)
    assert len(again) == 4 and {r["id"]: r for r in again}["red"] == red


def test_resume_with_other_settings_or_another_list_is_refused(tmp_path: Path, endpoint: ScriptedOpenAIServer,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path, many_pairs(3))
    out = tmp_path / "run"
    assert main(argv(pairs, out, endpoint.base_url)) == 0
    capsys.readouterr()
    assert main(argv(pairs, out, endpoint.base_url, "--max-turns", "7")) == 2
    assert "agent.max_llm_calls (40 -> 7)" in capsys.readouterr().err
    write_pairs(tmp_path, [*many_pairs(2), {"id": "p002", "image": "img/2.png", "query": "changed"}])
    assert main(argv(pairs, out, endpoint.base_url)) == 2
    assert "dataset.fingerprint" in capsys.readouterr().err
    assert len(records(out)) == 3


def test_a_second_process_on_the_same_folder_is_refused(tmp_path: Path, endpoint: ScriptedOpenAIServer,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path, many_pairs(2))
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from evals.rundir import RunLock, "
         "RunPaths\nwith RunLock(RunPaths(Path(sys.argv[1]))):\n print('locked', flush=True); time.sleep(60)",
         str(out)], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        assert main(argv(pairs, out, endpoint.base_url)) == 2
        assert f"another process (pid {holder.pid}) is working in {out}" in capsys.readouterr().err
        assert not (out / "samples.jsonl").exists()
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.parametrize(("lines", "expected"), [
    (None, "pairs.jsonl not found"),
    ([{"image": "img/0.png", "query": "fine"}, "{not json", "[1, 2]"],
     "has 2 bad line(s): line 2: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
     "(char 1)); line 3: a JSON list, not an object"),
    ([{"id": "a", "image": "img/0.png", "query": "q"}, {"image": "img/1.png", "query": "q"},
      {"id": "a", "image": "img/2.png", "query": "q"}, {"id": "2", "image": "img/0.png", "query": "q"}],
     'repeats ids (each pair needs its own; a line without an id has its line number): id "a" on lines 1, 3; '
     'id "2" on lines 2, 4'),
    ([{"image": "img/9.png", "query": "q"}], "line 1: image "),
    ([{"image": "img/0.png"}, {"image": "img/0.png", "query": "  "}],
     'line 1: "query" is missing or not a string; line 2: bad "query": query must be a non-empty string'),
    ([{"id": "../up", "image": "img/0.png", "query": "q"}, {"id": 7, "image": "img/0.png", "query": "q"}],
     "line 1: the id \"../up\" cannot name a file"),
    (["", "  "], "holds no pair"),
])
def test_bad_inputs_exit_2_with_the_line(lines: list[Any] | None, expected: str, tmp_path: Path,
                                         endpoint: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_pairs(tmp_path, lines) if lines is not None else tmp_path / "pairs.jsonl"
    out = tmp_path / "run"
    assert main(argv(pairs, out, endpoint.base_url)) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (out / "samples.jsonl").exists() and endpoint.call_count == 0


def test_the_progress_bar_shows_on_a_terminal_or_with_v(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not batch._show_progress(argparse.Namespace(no_progress=False, verbose=0))
    assert batch._show_progress(argparse.Namespace(no_progress=False, verbose=1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert batch._show_progress(argparse.Namespace(no_progress=False, verbose=0))
    assert not batch._show_progress(argparse.Namespace(no_progress=True, verbose=1))


@pytest.mark.slow
def test_with_the_tiny_sam3(tmp_path: Path, tiny_sam3_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No test hook: SAM 3 loads through --sam3 and the LLM through the flags, as a user runs it."""
    pairs = write_pairs(tmp_path, many_pairs(3))
    out = tmp_path / "run"
    with ScriptedOpenAIServer(scripted_policy("red cup"), models=["scripted"]) as server:
        code = main(["batch", str(pairs), "--out", str(out), "--llm-base-url", server.base_url, "--model", "scripted",
                     "--sam3", str(tiny_sam3_dir), "--device", "cpu", "--score-threshold", "0", "--max-masks", "3",
                     "--concurrency", "3"])
    assert code == 0, capsys.readouterr().err
    got = records(out)
    assert sorted(r["id"] for r in got) == ["p000", "p001", "p002"]
    for r in got:
        assert r["status"] == "answered" and r["n_masks"] == len(r["detections"]) >= 1
        assert r["detections"][0]["rle"]["size"] == [48, 64]
        png = np.asarray(Image.open(out / r["mask_file"]))
        assert png.shape == (48, 64) and png.max() == r["n_masks"]
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["sam3"] == str(tiny_sam3_dir) and manifest["llm"]["model"] == "scripted"

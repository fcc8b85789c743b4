"""Real processes: a run killed with SIGKILL and resumed, and the lock on a run directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from evals_runner_helpers import (
    REPO,
    big_reasonseg,
    by_id,
    comparable,
    evals_process,
    records,
    rs_run,
    run_cli,
    subprocess_env,
    summary,
)


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= count:
            return lines
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was killed: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout} s")


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx, ids = big_reasonseg(tmp_path / "data", copies=3)  # 20 samples
    killed = tmp_path / "killed"
    argv = rs_run(fx.root, killed, "--concurrency", "2")
    proc = evals_process(argv, EVALS_TEST_LATENCY="0.1")
    try:
        _wait_for_lines(killed / "samples.jsonl", 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    partial = by_id(killed)
    assert 3 <= len(partial) < len(ids) and not (killed / "summary.json").exists()
    # rerun the same command (fast backend now): the missing samples run, the finished ones do not
    resumed = evals_process(argv)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    final = by_id(killed)
    assert sorted(final) == ids
    assert all(comparable(final[i]) == comparable(r) for i, r in partial.items())
    # the same as a run that was never interrupted (timings aside)
    clean = tmp_path / "clean"
    assert run_cli(rs_run(fx.root, clean, "--concurrency", "4"), capsys)[0] == 0
    assert summary(killed) == summary(clean)
    clean_records = by_id(clean)
    assert {i: comparable(r) for i, r in final.items()} == {i: comparable(r) for i, r in clean_records.items()}
    assert summary(clean)["status"]["answered"] == 16 and summary(clean)["n_samples"] == 20


def test_lock_keeps_a_second_process_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx, _ = big_reasonseg(tmp_path / "data", copies=0)
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from evals.rundir import RunLock, RunPaths\n"
         "with RunLock(RunPaths(Path(sys.argv[1]))):\n print('locked', flush=True); time.sleep(60)", str(out)],
        cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        code, _, err = run_cli(rs_run(fx.root, out), capsys)
        assert code == 2
        assert f"another process (pid {holder.pid}) is working in {out}" in err
        assert not (out / "samples.jsonl").exists()
    finally:
        holder.kill()
        holder.communicate()
    # the lock dies with its process
    assert run_cli(rs_run(fx.root, out), capsys)[0] == 0
    assert len(records(out)) == 5

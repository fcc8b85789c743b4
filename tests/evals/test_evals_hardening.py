"""The runner against hostile inputs: a backend answering junk with 200, schema-broken log lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals.records import agent_fields, failed_fields
from evals.rundir import RunDirError, RunPaths, SampleLog
from evals.runner import RunSettings, SampleOutput, run_samples
from sam3agent import Agent
from sam3agent.llm.base import LLMBackendError
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine

NO_MASK = '<tool>{"name": "report_no_mask", "parameters": {}}</tool>'


class _Metric:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def add(self, record: dict[str, Any]) -> None:
        self.seen.append(record["id"])

    def postfix(self) -> str:
        return f"n={len(self.seen)}"


class _AgentSample:
    """One agent run on a blank image, scored with a fixed IoU."""

    def __init__(self, sample_id: str, agent: Agent) -> None:
        self._id, self.agent = sample_id, agent

    @property
    def id(self) -> str:
        return self._id

    async def run(self) -> SampleOutput:
        result = await self.agent.arun(np.zeros((40, 50, 3), np.uint8), "the dog")
        return SampleOutput({"query": "the dog", **agent_fields(result), "iou": 1.0})

    def failed(self, error: LLMBackendError) -> SampleOutput:
        return SampleOutput({"query": "the dog", **failed_fields(error), "iou": 0.0})


def _settings() -> RunSettings:
    return RunSettings(concurrency=2, max_consecutive_failures=10, progress=False)


def _lines(paths: RunPaths) -> list[dict[str, Any]]:
    return [json.loads(line) for line in paths.samples.read_text().splitlines()]


async def test_malformed_200_answers_record_failed_samples(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    with ScriptedOpenAIServer([NO_MASK]) as server:
        server.malform_next(100, "<html>proxy error</html>", "text/html")
        llm = OpenAICompatibleLLM(server.base_url, "scripted", max_retries=1, backoff_base=0.01)
        agent = Agent(llm, FakeEngine({}))
        samples = [_AgentSample(f"s{i}", agent) for i in range(3)]
        records = await run_samples(paths, samples, metric=_Metric(), settings=_settings())
        await llm.aclose()
    assert [r["status"] for r in records] == ["failed"] * 3
    assert all("malformed response" in r["error"] and server.base_url in r["error"] for r in records)
    assert sorted(r["id"] for r in _lines(paths)) == ["s0", "s1", "s2"]


def _record(sample_id: str, status: str = "answered") -> dict[str, Any]:
    return {"schema_version": 1, "id": sample_id, "query": "q", "status": status, "iou": 1.0, "turns": 1,
            "seconds": 0.1, "attempt": 1}


async def test_incomplete_last_line_is_dropped_and_that_sample_reruns(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.samples.write_text(json.dumps(_record("a")) + "\n" + json.dumps({"id": "b", "schema_version": 1}) + "\n")
    llm = ScriptedLLM([NO_MASK])
    samples = [_AgentSample("a", Agent(llm, FakeEngine({}))), _AgentSample("b", Agent(llm, FakeEngine({})))]
    with caplog.at_level(logging.WARNING, logger="evals.rundir"):
        records = await run_samples(paths, samples, metric=_Metric(), settings=_settings())
    assert [r["status"] for r in records] == ["answered", "no_mask"]
    assert [r["id"] for r in _lines(paths)] == ["a", "b"] and llm.remaining == 0
    assert any("last line" in m and "query" in m for m in caplog.messages)


@pytest.mark.parametrize("broken", [
    {"id": "b", "schema_version": 1},
    {**_record("b"), "status": 3},
    {**_record("b"), "turns": "three"},
    {**_record("b"), "status": "exploded"},
])
def test_schema_broken_middle_line_is_reported_like_a_corrupt_one(tmp_path: Path, broken: dict[str, Any]) -> None:
    path = tmp_path / "samples.jsonl"
    content = "".join(json.dumps(r) + "\n" for r in (_record("a"), broken, _record("c")))
    path.write_text(content)
    with pytest.raises(RunDirError, match="line 2 is not a sample record"):
        SampleLog(path, complete=True).load()
    assert path.read_text() == content
    path.write_text(content.rsplit(json.dumps(_record("c")), 1)[0])  # now the broken line is the last
    with pytest.raises(RunDirError, match="line 2"):
        SampleLog(path, complete=True).load(repair=False)
    assert [r["id"] for r in SampleLog(path, complete=True).load()] == ["a"]


async def test_schema_broken_middle_line_stops_a_resume_with_the_corrupt_line_error(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.samples.write_text("".join(json.dumps(r) + "\n" for r in (_record("a"), {"id": "b"}, _record("c"))))
    samples = [_AgentSample(i, Agent(ScriptedLLM([NO_MASK]), FakeEngine({}))) for i in "abc"]
    with pytest.raises(RunDirError, match=r"line 2 is not a sample record \(missing query, status"):
        await run_samples(paths, samples, metric=_Metric(), settings=_settings())

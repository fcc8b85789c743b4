"""``Agent.arun_many``: completion order, at most K in flight, lazy input, per-item failures.

The model here is a gated LLM: each run's first call waits until the test opens that query's gate,
so which run finishes when is decided by the test, not by the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from agent_helpers import tool

from sam3agent.agent import Agent
from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest
from sam3agent.many import ManyFailure, ManyItem, ManyResult
from sam3core.fake import FakeEngine

QUERY = re.compile(r"^Query: (.*)$", re.M)


class GatedLLM:
    """Answers ``report_no_mask`` once the query's gate is open; ``explode`` raises LLMBackendError."""

    name = "gated"

    def __init__(self, queries: list[str], *, open_all: bool = False) -> None:
        self.gates = {q: asyncio.Event() for q in queries}
        if open_all:
            for gate in self.gates.values():
                gate.set()
        self.active = 0
        self.peak = 0
        self.cancelled = 0

    async def complete(self, request: LLMRequest) -> Completion:
        match = QUERY.search(request.messages[1].plain_text)
        assert match is not None
        query = match.group(1)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.gates[query].wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        if query == "explode":
            raise LLMBackendError("gated", "injected failure")
        return Completion(text=tool("report_no_mask"), model=self.name)


@pytest.fixture(scope="module", autouse=True)
def _warm_imports() -> None:
    """Import what a run's first picture encoding imports (transformers' Qwen2-VL resize, seconds on a
    busy CPU) before the tests, so that their waits measure the runs, not one import."""
    importlib.import_module("transformers.models.qwen2_vl.image_processing_qwen2_vl")


@pytest.fixture
def picture() -> np.ndarray:
    return np.full((24, 32, 3), 90, np.uint8)


async def wait_until(condition: object, timeout: float = 60.0) -> None:
    """Poll ``condition()`` (a callable) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def test_results_come_in_completion_order(picture: np.ndarray) -> None:
    queries = ["q0", "q1", "q2", "q3"]
    llm = GatedLLM(queries)
    agent = Agent(llm, FakeEngine())
    release = [2, 0, 3, 1]
    seen: list[tuple[int, str]] = []
    stream = agent.arun_many([(picture, q) for q in queries], concurrency=4)

    async def consume() -> None:
        async with contextlib.aclosing(stream):
            async for done in stream:
                assert isinstance(done, ManyResult) and done.ok
                assert done.result.status == "no_mask" and done.result.query == queries[done.index]
                seen.append((done.index, done.id))

    consumer = asyncio.create_task(consume())
    await _open_in_order(llm, queries, release, seen)
    await asyncio.wait_for(consumer, 60)
    assert seen == [(i, str(i)) for i in release]


async def _open_in_order(llm: GatedLLM, queries: list[str], order: list[int], seen: list[tuple[int, str]]) -> None:
    await wait_until(lambda: llm.active == len(queries))  # every run is waiting on its gate
    for k, i in enumerate(order):
        llm.gates[queries[i]].set()
        await wait_until(lambda k=k: len(seen) > k)  # the previous one came out before the next is opened


async def test_at_most_k_in_flight_and_the_input_is_pulled_lazily(picture: np.ndarray) -> None:
    queries = [f"q{i}" for i in range(10)]
    llm = GatedLLM(queries)
    agent = Agent(llm, FakeEngine())
    pulled: list[int] = []

    def items() -> Iterator[tuple[np.ndarray, str]]:
        for i, q in enumerate(queries):
            pulled.append(i)
            yield picture, q

    yielded: list[int] = []

    async def consume() -> None:
        async for done in agent.arun_many(items(), concurrency=3):
            assert len(pulled) <= len(yielded) + 3  # never more than K items taken but not handed back
            yielded.append(done.index)

    consumer = asyncio.create_task(consume())
    await wait_until(lambda: llm.active == 3)
    await asyncio.sleep(0.05)  # room for a wrong implementation to take more
    assert pulled == [0, 1, 2] and llm.active == 3
    for q in queries:  # one at a time: each opened gate frees one slot for exactly one new item
        llm.gates[q].set()
        await asyncio.sleep(0)
    await asyncio.wait_for(consumer, 60)
    assert sorted(yielded) == list(range(10)) and llm.peak == 3


async def test_per_item_failures_are_yielded_and_the_others_go_on(picture: np.ndarray) -> None:
    queries = ["fine", "explode", "also fine", "by mapping", "by record"]
    llm = GatedLLM(queries, open_all=True)
    agent = Agent(llm, FakeEngine())
    items: list[object] = [
        (picture, "fine"),
        (b"not an image", "fine"),  # ValueError: unreadable image
        (picture, "   "),  # ValueError: empty query
        (picture, "explode"),  # LLMBackendError, with the run so far
        "neither a pair nor a mapping",  # TypeError
        (picture, "also fine"),
        {"image": picture, "query": "by mapping", "id": 17},
        ManyItem(picture, "by record", id="rec"),
    ]
    out = {done.index: done async for done in agent.arun_many(items, concurrency=2)}
    assert sorted(out) == list(range(len(items)))
    ok = {i: d for i, d in out.items() if isinstance(d, ManyResult)}
    failed = {i: d for i, d in out.items() if isinstance(d, ManyFailure)}
    assert sorted(ok) == [0, 5, 6, 7] and all(d.result.status == "no_mask" for d in ok.values())
    assert [ok[i].id for i in (0, 5, 6, 7)] == ["0", "5", "17", "rec"]
    assert {i: type(d.error) for i, d in failed.items()} == {1: ValueError, 2: ValueError, 3: LLMBackendError,
                                                             4: TypeError}
    assert "cannot decode image" in str(failed[1].error) and "non-empty" in str(failed[2].error)
    assert not any(d.ok for d in failed.values())
    partial = failed[3].partial_result
    assert partial is not None and "backend failed" in partial.reason and failed[1].partial_result is None


async def test_async_iterable_input(picture: np.ndarray) -> None:
    queries = ["a", "b", "c"]
    agent = Agent(GatedLLM(queries, open_all=True), FakeEngine())

    async def items() -> AsyncIterator[tuple[np.ndarray, str]]:
        for q in queries:
            await asyncio.sleep(0)
            yield picture, q

    got = sorted([(d.index, d.result.query) async for d in agent.arun_many(items(), concurrency=2)
                  if isinstance(d, ManyResult)])
    assert got == [(0, "a"), (1, "b"), (2, "c")]


async def test_leaving_early_cancels_the_runs_in_flight(picture: np.ndarray) -> None:
    queries = [f"q{i}" for i in range(6)]
    llm = GatedLLM(queries)
    agent = Agent(llm, FakeEngine())
    pulled: list[int] = []

    def items() -> Iterator[tuple[np.ndarray, str]]:
        for i, q in enumerate(queries):
            pulled.append(i)
            yield picture, q

    stream = agent.arun_many(items(), concurrency=3)
    async with contextlib.aclosing(stream):
        first = asyncio.ensure_future(anext(stream))
        await wait_until(lambda: llm.active == 3)
        llm.gates["q1"].set()
        done = await asyncio.wait_for(first, 60)
        assert done.index == 1
    assert llm.active == 0 and llm.cancelled == 2  # q0 and q2 were waiting; closing cancelled them
    assert pulled == [0, 1, 2]  # closed before the freed slot was refilled


async def test_an_error_of_the_input_itself_propagates(picture: np.ndarray) -> None:
    llm = GatedLLM(["q0"])
    agent = Agent(llm, FakeEngine())

    def items() -> Iterator[tuple[np.ndarray, str]]:
        yield picture, "q0"
        raise OSError("the list went away")

    with pytest.raises(OSError, match="went away"):
        async for _ in agent.arun_many(items(), concurrency=2):
            pass
    assert llm.active == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_bad_concurrency_is_refused_at_the_call(bad: object) -> None:
    agent = Agent(GatedLLM([]), FakeEngine())
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        agent.arun_many([], concurrency=bad)  # type: ignore[arg-type]


def test_items_must_be_iterable() -> None:
    agent = Agent(GatedLLM([]), FakeEngine())
    with pytest.raises(TypeError, match="iterable"):
        agent.arun_many(42)  # type: ignore[arg-type]

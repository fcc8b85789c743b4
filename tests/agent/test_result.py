"""AgentResult: JSON form with RLE masks, save(), and step records without image bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import supervision as sv
from agent_helpers import tool, verdict_by_mask
from PIL import Image

from sam3agent import Agent, AgentResult
from sam3agent.llm.base import Completion, Usage
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.result import SCHEMA_VERSION, detections_from_list


async def _run(image, engine) -> AgentResult:  # type: ignore[no-untyped-def]
    llm = ScriptedLLM(
        [Completion(text=tool("segment_phrase", text_prompt="dog"), usage=Usage(100, 20), attempts=2),
         tool("examine_each_mask"), tool("select_masks_and_return", final_answer_masks=[1, 2])],
        verify_replies=verdict_by_mask(rejected=[1]),
    )
    return await Agent(llm, engine).arun(image, "the dogs")


async def test_to_dict_round_trips_through_json(image, masks, engine) -> None:
    result = await _run(image, engine)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION and data["status"] == "answered"
    assert data["image"] == {"source": "<numpy array>", "width": 80, "height": 60, "digest": result.image.digest}
    decoded = detections_from_list(data["detections"], 60, 80)
    assert len(decoded) == 2
    for got, want in zip(decoded.mask, [masks[1], masks[2]], strict=True):
        assert np.array_equal(got, want)
    np.testing.assert_allclose(decoded.xyxy, result.detections.xyxy)
    np.testing.assert_allclose(decoded.confidence, result.detections.confidence)
    assert [d["phrase"] for d in data["detections"]] == ["dog", "dog"]
    assert data["totals"]["turns"] == 3 and data["totals"]["llm_calls"] == 7  # 2 + 1 + 1 main, 3 verify
    assert data["totals"]["prompt_tokens"] == 100 and data["totals"]["total_tokens"] == 120
    assert data["config"]["max_llm_calls"] == 40 and data["prompt_version"] == result.prompt_version
    assert data["config"]["prompt_version"] == result.prompt_version


async def test_steps_are_summarised_without_image_bytes(image, engine) -> None:
    result = await _run(image, engine)
    text = json.dumps([s.to_dict() for s in result.steps])
    assert "base64" not in text and len(text) < 60_000
    first = result.steps[0]
    assert first.sent[0]["content"][0].startswith("<system prompt,")
    assert first.sent[1]["content"][0].startswith("<image ") and "'raw image'" in first.sent[1]["content"][0]
    assert first.usage == Usage(100, 20) and first.attempts == 2
    assert first.images_out and "'marks 1-3'" in first.images_out[0]
    assert first.sam_seconds > 0 and first.render_seconds > 0
    examine = result.steps[1]
    assert len(examine.verifications) == 3 and examine.verifications[0].verdict == "reject"
    assert all(v.sent[1]["content"][1].startswith("<image ") for v in examine.verifications)


async def test_save_writes_every_file(image, masks, engine, tmp_path: Path) -> None:
    result = await _run(image, engine)
    out = result.save(tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert names == {"overlay.png", "mask.png", "result.json", "trajectory.json", "trajectory.html", "images"}
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.size == (80, 60)
    with Image.open(out / "mask.png") as mask:
        assert mask.size == (80, 60)
    trajectory = json.loads((out / "trajectory.json").read_text())
    files = trajectory["image_files"]
    assert len(files) == len(result.images) == 1 + 1 + 3 * 2 + 1  # raw, marks, 3x(single, zoom), re-render
    for digest, name in files.items():
        assert (out / name).read_bytes() == result.images[digest].data
    saved = json.loads((out / "result.json").read_text())
    assert "steps" not in saved and saved["status"] == "answered"
    assert len(trajectory["steps"]) == 3


async def test_nothing_written_during_a_run(image, engine, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    await _run(image, engine)
    assert list(tmp_path.iterdir()) == []


async def test_empty_answer_serialises(image, engine) -> None:
    result = await Agent(ScriptedLLM([tool("report_no_mask")]), engine).arun(image, "nothing")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["detections"] == [] and data["status"] == "no_mask"
    assert len(detections_from_list([], 60, 80)) == 0
    assert result.mask().shape == (60, 80) and not result.mask().any()
    assert result.overlay().size == (80, 60)


def test_wall_seconds_cover_the_whole_run() -> None:
    """Totals.wall_seconds includes image preparation, not only the turns."""
    import time

    import numpy as np

    from sam3agent import Agent
    from sam3agent.llm.scripted import ScriptedLLM
    from sam3core.fake import FakeEngine

    class SlowPrepare(FakeEngine):
        def prepare(self, image):  # type: ignore[no-untyped-def]
            time.sleep(0.2)
            return super().prepare(image)

    llm = ScriptedLLM(['<tool>{"name": "report_no_mask", "parameters": {}}</tool>'])
    result = Agent(llm, SlowPrepare()).run(np.zeros((20, 30, 3), np.uint8), "a cat")
    assert result.status == "no_mask"
    assert result.totals.wall_seconds >= 0.2


def test_backend_failure_carries_the_run_so_far() -> None:
    """LLMBackendError out of arun holds the partial result: the turns and tokens already spent."""
    import numpy as np
    import pytest

    from evals.records import failed_fields
    from sam3agent import Agent
    from sam3agent.llm.base import LLMBackendError
    from sam3agent.llm.scripted import ScriptedLLM
    from sam3core.fake import FakeEngine

    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:12] = True
    llm = ScriptedLLM(['<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "cat"}}</tool>'])
    with pytest.raises(LLMBackendError) as info:  # the script runs out on the second call
        Agent(llm, FakeEngine({"cat": [mask]})).run(np.zeros((20, 30, 3), np.uint8), "a cat")
    partial = info.value.partial_result
    assert partial is not None and partial.totals.turns == 1
    assert "backend failed" in partial.reason
    fields = failed_fields(info.value)
    assert fields["status"] == "failed" and fields["turns"] == 1 and fields["phrases"] == ["cat"]
    assert fields["error"]


def test_predicted_boxes_survive_the_json_round_trip() -> None:
    from sam3agent.result import detections_from_list, detections_to_list

    mask = np.zeros((1, 6, 8), bool)
    mask[0, 1:4, 2:5] = True
    dets = sv.Detections(xyxy=np.array([[2, 1, 4, 3]], np.float32), mask=mask, confidence=np.array([0.8], np.float32),
                         data={"phrase": np.array(["cup"], dtype=object),
                               "predicted_xyxy": np.array([[1.75, 0.5, 5.25, 4.0]], np.float32)})
    records = detections_to_list(dets, 6, 8)
    assert records[0]["predicted_box_xyxy"] == [1.75, 0.5, 5.25, 4.0] and records[0]["box_xyxy"] == [2, 1, 4, 3]
    back = detections_from_list(records, 6, 8)
    assert np.array_equal(back.data["predicted_xyxy"], dets.data["predicted_xyxy"])
    assert np.array_equal(back.mask, mask)

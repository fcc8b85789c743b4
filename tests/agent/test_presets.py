"""The paper preset's knobs, our default's differences, and verbatim prompt files."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
from agent_helpers import tool, verdict_by_mask
from PIL import Image

from sam3agent import Agent, AgentConfig
from sam3agent.backends import add_backend_arguments, build_config
from sam3agent.llm.base import ImagePart, LLMRequest, Message, SamplingConfig, TextPart
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.llm.wire import to_openai_messages


def test_paper_preset_turns_every_knob_to_the_reference() -> None:
    cfg = AgentConfig.paper()
    assert (cfg.max_llm_calls, cfg.max_masks, cfg.overlap_iom, cfg.reexamine) == (100, None, 0.3, "all")
    assert cfg.max_verifications is None and cfg.max_image_pixels is None
    assert (cfg.image_format, cfg.render_format, cfg.image_detail) == ("png", "png", "high")
    assert cfg.refused_phrase_restarts_window and cfg.box_source == "predicted"
    assert cfg.sampling == SamplingConfig(temperature=None, top_p=None, seed=None, max_tokens=4096)
    default = AgentConfig()
    assert default.overlap_iom == 0.3 and default.render_format == "png" and default.reexamine == "unchecked"
    assert AgentConfig.paper(max_llm_calls=7).max_llm_calls == 7


async def test_paper_sends_original_size_png_with_detail_high(engine) -> None:
    big = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    await Agent(llm, engine, AgentConfig.paper()).arun(big, "dog")
    images = llm.requests[1].images
    assert [(i.width, i.height, i.mime, i.detail) for i in images] == [(80, 60, "image/png", "high")] * 2
    raw = np.asarray(Image.open(io.BytesIO(images[0].data)).convert("RGB"))
    assert np.array_equal(raw, big)  # lossless: the model sees the original pixels
    wire = to_openai_messages(llm.requests[1].messages)
    parts = [p for m in wire if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image_url"]
    assert [p["image_url"]["detail"] for p in parts] == ["high", "high"]


async def test_default_sends_jpeg_photo_and_png_renders_without_detail(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    await Agent(llm, engine, AgentConfig()).arun(image, "dog")
    raw, marks = llm.requests[1].images
    assert (raw.mime, marks.mime, raw.detail) == ("image/jpeg", "image/png", None)
    wire = to_openai_messages(llm.requests[1].messages)
    assert all("detail" not in p.get("image_url", {}) for m in wire if isinstance(m["content"], list)
               for p in m["content"])


async def test_paper_reexamines_every_mask_without_a_cap(image, engine) -> None:
    replies = [tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"), tool("examine_each_mask"),
               tool("select_masks_and_return", final_answer_masks=[1])]
    paper = ScriptedLLM(replies, verify_replies=verdict_by_mask(rejected=[2]))
    result = await Agent(paper, engine, AgentConfig.paper()).arun(image, "dogs")
    assert [[v.mask_id for v in s.verifications] for s in result.steps[1:3]] == [[1, 2, 3], [1, 2]]
    ours = ScriptedLLM(replies, verify_replies=verdict_by_mask(rejected=[2]))
    mine = await Agent(ours, engine, AgentConfig(max_verifications=2)).arun(image, "dogs")
    assert [[v.mask_id for v in s.verifications] for s in mine.steps[1:3]] == [[1, 2], [2]]


async def test_refused_phrase_restarts_the_window_only_in_paper(image, engine) -> None:
    replies = [tool("segment_phrase", text_prompt="dog"), tool("segment_phrase", text_prompt="dog"),
               tool("select_masks_and_return", final_answer_masks=[2])]
    for cfg, labels in ((AgentConfig.paper(), ["raw image"]), (AgentConfig(), ["raw image", "marks 1-3"])):
        llm = ScriptedLLM(replies)
        result = await Agent(llm, engine, cfg).arun(image, "dogs")
        assert [i.label for i in llm.requests[2].images] == labels
        assert result.status == "answered" and len(result.detections) == 1  # masks stay selectable


def test_unset_sampling_fields_are_left_to_the_server() -> None:
    llm = OpenAICompatibleLLM("http://127.0.0.1:9/v1", "m")
    request = LLMRequest(messages=[Message.text("user", "hi")], sampling=AgentConfig.paper().sampling)
    body = llm.request_body(request)
    assert "temperature" not in body and "top_p" not in body and "seed" not in body
    assert body["max_tokens"] == 4096
    assert llm.request_body(LLMRequest(messages=[Message.text("user", "hi")]))["temperature"] == 0.0


def test_history_keeps_the_reply_only_through_its_first_call() -> None:
    from sam3agent.parsing import through_first_call

    reply = 'think <tool>{"name": "report_no_mask", "parameters": {}}</tool> and <tool>{"x": 1}</tool>'
    assert through_first_call(reply).endswith("{}}</tool>")
    assert through_first_call("no call") == "no call"


# -- verbatim prompt files ---------------------------------------------------------------------


async def test_system_and_verify_prompt_files_are_sent_verbatim(tmp_path, image, engine) -> None:
    system = tmp_path / "system.txt"
    system.write_text("Costs $5 and ${not_a_placeholder}: reply with <tool>...</tool>.\n", encoding="utf-8")
    verify = tmp_path / "verify.txt"
    verify.write_text("Check it. $query stays as written.", encoding="utf-8")
    cfg = AgentConfig(system_prompt_file=system, verify_prompt_file=verify, prompt_dir=None)
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"),
                       tool("select_masks_and_return", final_answer_masks=[1])],
                      verify_replies=verdict_by_mask(rejected=[]))
    await Agent(llm, engine, cfg).arun(image, "dogs")
    main = [r for r in llm.requests if r.purpose == "main"]
    checks = [r for r in llm.requests if r.purpose == "verify"]
    sent = "Costs $5 and ${not_a_placeholder}: reply with <tool>...</tool>."
    assert {r.messages[0].plain_text for r in main} == {sent}
    assert {r.messages[0].plain_text for r in checks} == {"Check it. $query stays as written."}


def test_prompt_file_wins_over_prompt_dir_and_enters_the_version(tmp_path) -> None:
    import shutil

    from sam3agent.prompts import default_prompt_dir

    folder = tmp_path / "prompts"
    shutil.copytree(default_prompt_dir(), folder)
    (folder / "system_text.txt").write_text("from the folder $guidelines $tools", encoding="utf-8")
    file = tmp_path / "mine.txt"
    file.write_text("from the file", encoding="utf-8")
    cfg = AgentConfig(prompt_dir=folder, system_prompt_file=file)
    assert cfg.load_prompts().system("text") == "from the file"
    before = cfg.prompt_version
    assert before != AgentConfig(prompt_dir=folder).prompt_version
    file.write_text("from the file, edited", encoding="utf-8")
    assert AgentConfig(prompt_dir=folder, system_prompt_file=file).prompt_version != before


def test_cli_flags_reach_the_config_and_bad_files_are_named(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    file = tmp_path / "p.txt"
    file.write_text("verbatim", encoding="utf-8")
    args = parser.parse_args(["--preset", "paper", "--system-prompt", str(file), "--temperature", "0.7"])
    cfg = build_config(args)
    assert cfg.system_prompt_file == file and cfg.max_masks is None
    assert cfg.sampling.temperature == 0.7 and cfg.sampling.max_tokens == 4096 and cfg.sampling.seed is None
    missing = parser.parse_args(["--verify-prompt", str(tmp_path / "nope.txt")])
    with pytest.raises(ValueError, match=r"verify_prompt_file: no such file .*nope\.txt"):
        build_config(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        AgentConfig(system_prompt_file=empty).load_prompts()


def test_image_part_detail_reaches_the_wire() -> None:
    part = ImagePart(data=b"\x89PNG", mime="image/png", width=1, height=1, detail="low")
    wire = to_openai_messages([Message(role="user", content=[TextPart("a"), part])])
    assert wire[0]["content"][1]["image_url"]["detail"] == "low"

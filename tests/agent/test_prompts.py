"""Prompt templates: loading, rendering, versioning; the config around them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from sam3agent import AgentConfig
from sam3agent.prompts import default_prompt_dir, load_prompts

SECTIONS_AND_VALUES = {
    "segment_found": {"phrase": "p", "count": 2, "listing": "l", "query": "q"},
    "segment_empty": {"phrase": "p", "query": "q"},
    "phrase_reused": {"phrase": "p", "tried": "t"},
    "memory": {"tried": "t"},
    "marks_caption": {"count": 1},
    "examine_result": {"verdicts": "v", "after": "a"},
    "examine_unchecked": {"ids": "1", "limit": 2},
    "examine_renumbered": {"count": 1, "mapping": "m"},
    "examine_unchanged": {},
    "examine_all_rejected": {"query": "q"},
    "already_examined": {},
    "no_masks": {"tool": "t"},
    "bad_ids": {"problems": "p", "count": 3},
    "format_error": {"detail": "d", "how": "h"},
    "how_text": {},
    "how_native": {},
    "extra_call_skipped": {},
    "image_removed": {},
    "verify_caption_raw": {},
    "verify_caption_single": {"mask_id": 1},
    "verify_caption_zoom": {"mask_id": 1},
}


def test_every_template_renders_completely() -> None:
    prompts = load_prompts()
    assert default_prompt_dir().is_dir()
    feedback = {k.split(".", 1)[1] for k in prompts.templates if k.startswith("feedback.")}
    assert feedback == set(SECTIONS_AND_VALUES)
    for section, values in SECTIONS_AND_VALUES.items():
        assert "$" not in prompts.feedback(section, **values), section
    assert "$" not in prompts.render("user_turn", query="q") and "q" in prompts.render("user_turn", query="q")
    assert "$" not in prompts.render("verify_user", query="q", mask_id=1)
    assert "<verdict>Accept</verdict>" in prompts.render("verify_system")
    with pytest.raises(KeyError):
        prompts.feedback("segment_found", phrase="p")


def test_version_is_stable_and_follows_content(tmp_path: Path) -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", load_prompts().version)
    assert load_prompts().version == load_prompts(default_prompt_dir()).version
    copy = tmp_path / "prompts"
    shutil.copytree(default_prompt_dir(), copy)
    assert load_prompts(copy).version == load_prompts().version
    (copy / "guidelines.txt").write_text("Be brief.\n", encoding="utf-8")
    changed = load_prompts(copy)
    assert changed.version != load_prompts().version
    assert AgentConfig(prompt_dir=copy).prompt_version == changed.version
    assert "Be brief." in changed.system("text")


def test_missing_template_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"guidelines\.txt is missing from"):
        load_prompts(tmp_path)


def test_config_validation() -> None:
    cfg = AgentConfig.paper(protocol="native")
    assert cfg.max_llm_calls == 100 and cfg.protocol == "native"
    assert cfg.effective_verify_sampling == cfg.sampling
    with pytest.raises(ValidationError, match="min_image_pixels"):
        AgentConfig(min_image_pixels=10_000_000)
    with pytest.raises(ValidationError):
        AgentConfig(protocol="xml")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AgentConfig(max_llm_calls=0)
    dumped = AgentConfig(max_llm_calls=7).model_dump(mode="json")
    assert AgentConfig.model_validate(dumped) == AgentConfig(max_llm_calls=7)


def test_config_with_other_prompt_version_warns(caplog: pytest.LogCaptureFixture) -> None:
    dumped = {**AgentConfig().model_dump(mode="json"), "prompt_version": "000000000000"}
    with caplog.at_level("WARNING", logger="sam3agent.config"):
        assert AgentConfig.model_validate(dumped) == AgentConfig()
    assert "000000000000" in caplog.text

"""The trajectory page: self-contained, escaped, every turn and every image the model saw."""

from __future__ import annotations

import re

from viewer_helpers import tool

from sam3agent import Agent, AgentConfig
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.viewer import render_trajectory_html
from sam3core.fake import FakeEngine


def test_self_contained(run_result) -> None:
    html = render_trajectory_html(run_result)
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith(("data:image/", "#")) for ref in refs)
    assert "<link" not in html and "<script" not in html and "@import" not in html and "url(" not in html


def test_model_and_user_text_is_escaped(run_result) -> None:
    html = render_trajectory_html(run_result)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt; first &amp; think." in html


def test_every_turn_and_every_image(run_result) -> None:
    html = render_trajectory_html(run_result)
    assert len(run_result.steps) == 4
    for step in run_result.steps:
        assert html.count(f'<section class="turn" id="turn-{step.index}">') == 1
        assert f'href="#turn-{step.index}"' in html
    assert len(run_result.images) >= 8  # raw, marks, 3 x (alone, close-up), re-rendered marks
    for digest, part in run_result.images.items():
        assert html.count(f'id="img-{digest[:12]}"') == 1, part.label
    anchors = set(re.findall(r'id="([^"]+)"', html))
    assert all(target in anchors for target in re.findall(r'href="#([^"]+)"', html))
    assert html.count("<img ") == len(run_result.images) + 1  # + the answer overlay


def test_turn_contents(run_result) -> None:
    html = render_trajectory_html(run_result)
    turns = re.split(r'<section class="turn" id="turn-\d+">', html)[1:]
    assert "no usable tool call (no_tool_call)" in turns[0]
    assert "segment_phrase" in turns[1] and "{&#34;text_prompt&#34;: &#34;red cup&#34;}" in turns[1]
    assert "found 3 mask(s)" in turns[1] and "marks 1-3" in turns[1]
    assert "Verifications (3)" in turns[2] and turns[2].count('class="badge bad">reject<') == 1
    assert "That is the saucer, not the cup." in turns[2]
    assert "Final answer: mask(s) 1." in turns[3]
    for turn in turns:
        assert re.search(r"LLM \d+\.\d\d s · SAM 3 \d+\.\d\d s", turn) and "tokens " in turn


def test_summary(run_result) -> None:
    html = render_trajectory_html(run_result)
    assert 'class="badge ok">answered<' in html and 'id="overlay"' in html
    assert "red cup" in html.split('class="dets"')[1].split("</table>")[0]
    assert "4 main-loop call(s) + 3 verification(s)" in html and "no_tool_call x1" in html


def test_save_writes_the_page(saved_run) -> None:
    html = (saved_run / "trajectory.html").read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('<section class="turn"') == 4


def test_no_mask_run() -> None:
    llm = ScriptedLLM([tool("report_no_mask", "There is no giraffe.")])
    result = Agent(llm, FakeEngine({}), AgentConfig()).run(_tiny_png(), "the giraffe")
    html = render_trajectory_html(result)
    assert 'class="badge warn">no_mask<' in html and "No mask in the answer." in html
    assert html.count('<section class="turn"') == 1


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()

"""Offline quickstart: the real agent loop on a real photo, with no GPU, no weights and no server.

SAM 3 is a tiny randomly initialised model (``sam3core.testing.save_tiny_sam3``), loaded through
``Sam3Engine.from_pretrained`` exactly as real weights are; the MLLM is a :class:`ScriptedLLM` that
segments "person", examines the masks (rejecting mask 2) and selects mask 1. The photo is
scikit-image's astronaut (``skimage.data.astronaut()``; scikit-image comes with the ``dev`` extra).
The result is saved with its HTML trajectory::

    .venv/bin/python examples/quickstart_offline.py              # saves into ./quickstart-run/
    .venv/bin/python examples/quickstart_offline.py --out DIR --image chelsea

Random weights give random masks: this shows what a run produces and how to drive the API, not an
answer. For a real run, swap in ``Sam3Engine.from_pretrained("facebook/sam3")`` and an
``OpenAICompatibleLLM`` (see README.md, "Python API").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from skimage import data

from sam3agent import Agent, AgentConfig
from sam3agent.llm import LLMRequest, ScriptedLLM
from sam3core.engine import Sam3Engine
from sam3core.testing import save_tiny_sam3

QUERY = "the astronaut"

# Score threshold: SAM 3 keeps an instance when its score (query probability x presence probability)
# is above the threshold, 0.5 by default. The tiny random model is undecided about everything: both
# probabilities sit near 0.5, so every query scores about 0.25 (0.246-0.253 on these photos, whatever
# the phrase). At the default 0.5 it would find nothing and the run would end "no_mask"; at 0.0 all 20 of
# its queries come through, and overlap removal leaves 2 distinct masks on the astronaut, so the loop has
# masks to examine (mask 2 is rejected) and select. Real weights score what they find well above 0.5: keep
# the default threshold with them.
SCORE_THRESHOLD = 0.0


def tool_call(thought: str, name: str, **parameters: object) -> str:
    """A reply in the text protocol: free reasoning, then one ``<tool>{...}</tool>`` block."""
    return f"{thought}\n<tool>{json.dumps({'name': name, 'parameters': parameters})}</tool>"


def verdict(request: LLMRequest) -> str:
    """The scripted verifier: rejects mask 2, accepts every other mask."""
    if "Candidate: mask 2." in request.messages[-1].plain_text:
        return "The painted region is not the astronaut.\n<verdict>Reject</verdict>"
    return "The painted region covers the astronaut.\n<verdict>Accept</verdict>"


def scripted_model() -> ScriptedLLM:
    """Three main-loop turns (segment, examine, select) and a verifier for any number of masks."""
    return ScriptedLLM(
        [
            tool_call("The query names one person: segment 'person'.", "segment_phrase", text_prompt="person"),
            tool_call("Several candidates: check each one.", "examine_each_mask"),
            tool_call("Mask 1 passed the check; it is the answer.", "select_masks_and_return",
                      final_answer_masks=[1]),
        ],
        verify_replies=verdict,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The agent offline: tiny random SAM 3 + a scripted model.")
    parser.add_argument("--out", type=Path, default=Path("quickstart-run"), help="where to save the result")
    parser.add_argument("--image", choices=["astronaut", "chelsea", "coffee"], default="astronaut",
                        help="which scikit-image photo to segment (default astronaut)")
    args = parser.parse_args(argv)

    photo = Image.fromarray(getattr(data, args.image)())
    config = AgentConfig(score_threshold=SCORE_THRESHOLD)  # every other setting at its default
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_tiny_sam3(Path(tmp) / "tiny-sam3")  # ~1 MB: model + processor, random weights
        with Sam3Engine.from_pretrained(weights, device="cpu") as engine:
            result = Agent(scripted_model(), engine, config).run(photo, QUERY)

    out = result.save(args.out).resolve()
    print(f"status   {result.status}: {result.reason}")
    print(f"masks    {len(result.detections)}; turns {result.totals.turns} "
          f"(+{result.totals.verify_calls} verification calls)")
    print(f"saved    {out}")
    print(f"view     {out / 'trajectory.html'}")
    return 0 if result.status == "answered" else 1


if __name__ == "__main__":
    raise SystemExit(main())

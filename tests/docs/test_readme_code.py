"""The README and docs/*.md say only true things: every Python block runs, every command line parses.

Each ```python block is compiled as written (no top-level ``await``) and executed in a fresh namespace,
in a temporary working folder. What a block needs and CI cannot have is stood in for *here*, never in
the docs:

- ``Sam3Engine.from_pretrained(anything)`` loads the tiny random SAM 3 (``sam3core.testing``) on CPU,
  through the real loading path; ``Sam3Tracker.from_pretrained(anything, engine)`` builds the tiny random
  tracker on that engine's ViT trunk (``sam3core.testing.build_random_sam3_tracker``);
- ``openai.AsyncOpenAI``, which ``OpenAICompatibleLLM`` and the chat example use, is pointed from
  ``http://localhost:8000/v1`` (the docs' vLLM) to a ``ScriptedOpenAIServer`` on 127.0.0.1, whose policy
  plays the MLLM (the self-test's stateless script) and, for requests carrying the ``segment_image``
  tool, the chat model;
- ``kids.jpg`` (scikit-image's astronaut) and ``photos/kids.jpg`` (its chelsea) are the photos.

Bash blocks are not executed; their ``sam3agent`` / ``python -m evals`` / example / benchmark command
lines are checked against the real argument parsers instead.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docs_helpers import PAGES, ROOT, Block, all_blocks, shell_commands

VLLM_URL = "http://localhost:8000/v1"
PYTHON_BLOCKS = all_blocks("python")
BASH_BLOCKS = all_blocks("bash")
README_TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,serve,ray]' && .venv/bin/pytest -q"


# ----------------------------------------------------------------------------- stand-ins


def chat_or_agent_policy() -> Any:
    """The scripted server's policy: the chat model when ``segment_image`` is offered, else the MLLM."""
    from sam3agent.app.selftest import scripted_policy

    agent_model = scripted_policy("child")  # segment, examine, select; report_no_mask when nothing is found

    def reply(body: dict[str, Any]) -> Any:
        tools = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        if "segment_image" not in tools:
            return agent_model(body)
        if any(m.get("role") == "tool" for m in body["messages"]):
            return "I outlined what I found on the overlay."
        # two calls in one reply: the docs' loop must answer both before sending the overlays; the second
        # names a file outside the allowed root, which comes back as an error answer, not an exception
        query = "every child"
        return {"tool_calls": [
            {"id": "call_1", "name": "segment_image", "arguments": {"image": "photos/kids.jpg", "query": query}},
            {"id": "call_2", "name": "segment_image", "arguments": {"image": "kids.jpg", "query": query}},
        ]}

    return reply


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[Any]:
    """The OpenAI-compatible server that stands in for vLLM (and for the chat model)."""
    from sam3agent.llm.server import ScriptedOpenAIServer

    with ScriptedOpenAIServer(chat_or_agent_policy()) as server:
        yield server


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the photos the docs name: kids.jpg and photos/kids.jpg."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("docs-cwd")
    Image.fromarray(data.astronaut()).save(folder / "kids.jpg", quality=90)
    (folder / "photos").mkdir()
    Image.fromarray(data.chelsea()).save(folder / "photos" / "kids.jpg", quality=90)
    return folder


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, photos: Path, tiny_sam3_dir: Path,
              scripted_server: Any) -> Iterator[dict[str, list[Any]]]:
    """Patch the weights and the server in; run in a fresh copy of the photo folder."""
    import openai

    from sam3core.engine import Sam3Engine

    seen: dict[str, list[Any]] = {"sam3": [], "engines": [], "base_urls": []}
    real_from_pretrained = Sam3Engine.from_pretrained.__func__  # type: ignore[attr-defined]

    def tiny_from_pretrained(cls: type, model: Any = "facebook/sam3", **kwargs: Any) -> Any:
        seen["sam3"].append(str(model))
        kwargs.setdefault("device", "cpu")
        engine = real_from_pretrained(cls, tiny_sam3_dir, **kwargs)
        seen["engines"].append(engine)
        return engine

    real_init = openai.AsyncOpenAI.__init__

    def to_scripted_server(self: Any, *args: Any, base_url: Any = None, **kwargs: Any) -> None:
        seen["base_urls"].append(str(base_url))
        if str(base_url).rstrip("/") == VLLM_URL:
            base_url = scripted_server.base_url
        real_init(self, *args, base_url=base_url, **kwargs)

    def tiny_tracker(cls: type, source: Any, engine: Any, **kwargs: Any) -> Any:
        from sam3core.testing import build_random_sam3_tracker

        seen["sam3"].append(str(source))
        return cls(build_random_sam3_tracker(detector=engine.model), engine, **kwargs)

    from sam3core.tracker import Sam3Tracker

    monkeypatch.setattr(Sam3Engine, "from_pretrained", classmethod(tiny_from_pretrained))
    monkeypatch.setattr(Sam3Tracker, "from_pretrained", classmethod(tiny_tracker))
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", to_scripted_server)
    cwd = tmp_path / "cwd"
    shutil.copytree(photos, cwd)
    monkeypatch.chdir(cwd)
    try:
        yield seen
    finally:
        for engine in seen["engines"]:
            engine.close()


# ----------------------------------------------------------------------------- python blocks


def test_docs_have_python_blocks() -> None:
    readme = [b for b in PYTHON_BLOCKS if b.page.name == "README.md"]
    assert readme, "README.md has no python block (its Python API section should have one)"
    assert len(PYTHON_BLOCKS) >= 4


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, stand_ins: dict[str, list[Any]], scripted_server: Any) -> None:
    code = compile(block.code, block.where, "exec")  # a SyntaxError here: top-level await, or broken code
    calls_before = scripted_server.call_count
    exec(code, {"__name__": "__main__"})
    if VLLM_URL in block.code:
        assert VLLM_URL in stand_ins["base_urls"], f"{block.where} never built a client for {VLLM_URL}"
        assert scripted_server.call_count > calls_before, f"{block.where} never called the LLM"
    if "from_pretrained(" in block.code:
        assert stand_ins["sam3"], f"{block.where} did not load SAM 3 through Sam3Engine.from_pretrained"


# ----------------------------------------------------------------------------- bash blocks


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def _script_options(path: Path) -> set[str] | None:
    """The options of a repository script: its ``build_parser()``, else the flags named in its source."""
    if not path.is_file():
        return None
    source = path.read_text("utf-8")
    if "def build_parser(" in source:
        return _options(runpy.run_path(str(path))["build_parser"]())
    return set(re.findall(r"""add_argument\(\s*["'](--?[\w-]+)["']""", source)) | {"-h", "--help"}


def _resolve(parser: argparse.ArgumentParser, tokens: list[str], where: str) -> tuple[set[str], list[str]]:
    """Walk subcommands; return the options valid at the end (with the parents') and the flags used."""
    from evals.cli import build_parser as evals_parser
    from sam3agent.app.serve.cli import build_parser as serve_parser

    allowed, flags = _options(parser), []
    for token in tokens:
        if token.startswith("-"):
            flags.append(token.split("=", 1)[0])
            continue
        choices = _subparsers(parser)
        if not choices:
            continue  # a positional (IMAGE, QUERY, RUN_DIR, ...)
        assert token in choices, f"{where}: {token!r} is not a command here (choose from {sorted(choices)})"
        if parser.prog.endswith("sam3agent") and token in ("eval", "serve"):
            parser = evals_parser() if token == "eval" else serve_parser()  # delegated command lines
        else:
            parser = choices[token]
        allowed |= _options(parser)
    return allowed, flags


def _check_command(tokens: list[str], where: str) -> bool:
    """Check one command line if it is ours; return whether it was."""
    from evals.cli import build_parser as evals_parser
    from sam3agent.app.cli import build_parser as cli_parser

    program = tokens[0]
    if program.endswith("bin/python") or program in ("python", "python3"):
        if tokens[1:3] == ["-m", "evals"]:
            allowed, flags = _resolve(evals_parser(), tokens[3:], where)
        elif len(tokens) > 1 and tokens[1].startswith(("examples/", "benchmarks/", "docs/")):
            options = _script_options(ROOT / tokens[1])
            assert options is not None, f"{where}: no such script {tokens[1]}"
            allowed, flags = options, [t.split("=", 1)[0] for t in tokens[2:] if t.startswith("-")]
        else:
            return False
    elif Path(program).name == "sam3agent":
        allowed, flags = _resolve(cli_parser(), tokens[1:], where)
    elif program.startswith("benchmarks/") or program.startswith(".ci/"):
        assert (ROOT / program).is_file(), f"{where}: no such script {program}"
        return True
    else:
        return False  # vllm, pip, curl, ray, hf, pytest: not ours to check
    unknown = sorted(set(flags) - allowed)
    assert not unknown, f"{where}: {' '.join(tokens[:4])} ... has no option(s) {unknown}"
    return True


def test_bash_blocks_name_real_commands_and_flags() -> None:
    checked = 0
    for block in BASH_BLOCKS:
        for tokens in shell_commands(block.code):
            checked += _check_command(tokens, block.where)
    assert checked >= 20, f"only {checked} command lines were recognised; is the shell parsing broken?"


def test_shell_parsing() -> None:
    script = ("for i in 0 1; do\n  CUDA_VISIBLE_DEVICES=$i python -m evals reasonseg run --data d \\\n"
              "      --shard $i/2 $FLAGS &\ndone; wait  # comment\nA=1 sam3agent run x.jpg 'a # b' --out o\n")
    assert shell_commands('FLAGS="--limit 2 \\\n  --preset paper"\n' + script) == [
        ["python", "-m", "evals", "reasonseg", "run", "--data", "d", "--shard", "$i/2", "--limit", "2", "--preset",
         "paper"],
        ["wait"],
        ["sam3agent", "run", "x.jpg", "a # b", "--out", "o"],
    ]
    with pytest.raises(AssertionError, match="no option"):
        _check_command(["sam3agent", "run", "x.jpg", "q", "--no-such-flag"], "test")
    with pytest.raises(AssertionError, match="not a command"):
        _check_command(["python", "-m", "evals", "reasonseg", "evaluate"], "test")


# ----------------------------------------------------------------------------- pages


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert f"\n{README_TEST_COMMAND}\n" in readme
    assert f"\n{README_TEST_COMMAND}\n" in (ROOT / ".ci" / "run").read_text("utf-8")


def test_readme_is_short_and_points_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert len(readme.splitlines()) <= 200, "the README is for a five-minute read: move details to docs/"
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
    assert "examples/quickstart_offline.py" in readme
    assert "docs/images/trajectory-viewer.png" in readme


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text("utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name} links {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_install_from_pypi(page: Path) -> None:
    text = page.read_text("utf-8")
    bad = re.findall(r"pip install(?:\s+-[\w-]+)*\s+['\"]?sam3agent(?![\w/-])", text)
    assert not bad, f"{page.name}: sam3agent is not on PyPI; install from the clone (pip install -e '.[...]'): {bad}"

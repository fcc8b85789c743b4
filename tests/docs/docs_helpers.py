"""Helpers of the docs tests: fenced code blocks of the Markdown pages, and shell command lines."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: the page, the line of its opening fence, its language and its text."""

    page: Path
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        """``README.md:57``-style location, relative to the repository root."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` (indented fences in lists included, their indent removed)."""
    blocks: list[Block] = []
    lines = page.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, body, start = len(opening["indent"]), [], i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{page.name}:{start}: a code block is never closed")
        blocks.append(Block(page, start, opening["lang"], "\n".join(body) + "\n"))
        i += 1
    return blocks


def all_blocks(lang: str) -> list[Block]:
    """The blocks of one language across README.md and docs/*.md, in page order."""
    return [b for page in PAGES for b in code_blocks(page) if b.lang == lang]


SHELL_KEYWORDS = {"do", "then", "else", "time", "exec", "!"}
SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")"}


def shell_commands(script: str) -> list[list[str]]:
    """Split a bash block into simple commands (tokens), comments, continuations and separators removed.

    Leading environment assignments (``CUDA_VISIBLE_DEVICES=0``) and keywords (``do``) are dropped,
    and so are ``for ...`` headers. A bare assignment (``BACKEND="--model m --preset paper"``) is
    remembered, and a later ``$BACKEND`` token is replaced by its words.
    """
    joined = re.sub(r"\\\n", " ", script)
    commands: list[list[str]] = []
    variables: dict[str, list[str]] = {}
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token not in SEPARATORS:
                name = re.fullmatch(r"\$\{?(\w+)\}?", token)
                current.extend(variables[name[1]] if name and name[1] in variables else [token])
                continue
            assignments = []
            while current and (current[0] in SHELL_KEYWORDS or re.match(r"^[A-Za-z_]\w*=", current[0])):
                assignments.append(current.pop(0))
            if not current:  # only assignments: shell variables for later lines
                for item in assignments:
                    name, _, value = item.partition("=")
                    variables[name] = shlex.split(value)
            elif current[0] not in ("for", "done", "fi", "if", "while"):
                commands.append(current)
            current = []
    return commands

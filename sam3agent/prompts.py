"""The model-facing prompt templates and their version hash.

Templates are plain text files using ``$name`` placeholders (:class:`string.Template`, so the
JSON braces in the prompts need no escaping). They ship inside the wheel as
``sam3agent/prompt_templates/``; in a source checkout they are the repository's top-level ``prompts/``.
``feedback.txt`` holds many short messages, one per ``[section]``.

A user-supplied prompt file (``AgentConfig.system_prompt_file`` / ``verify_prompt_file``, e.g. the
reference implementation's own prompt files for an exact-paper ablation) replaces the system
template verbatim: no placeholder is filled, so a ``$`` in it stays as written.

The prompt version is a short hash of every template's name and text and of any prompt file's
text: it changes whenever a prompt changes, and it is recorded in results and cache keys.

``extra_tools.txt`` holds the texts of the opt-in tools (``AgentConfig.tools``): what the system
prompt says about when each helps, and their feedback. It is used, and counted in the version,
only while one of those tools is on, so with none on the prompts and their version are exactly
what they were before the extra tools existed; a prompt folder needs it only to turn one on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from string import Template

from sam3agent.tools import EXTRA_TOOLS, canonical_extras, tools_prompt_text

_FILES = (
    "guidelines", "system_text", "system_native", "user_turn", "verify_system", "verify_user", "feedback",
)
_EXTRA_FILE = "extra_tools"  # optional; its sections become the templates "extra_tools.<section>"
_EXTRA_COMMON = ("guide_header", "memory_tried")  # sections every extra tool needs
_SECTION = re.compile(r"^\[([a-z_]+)\]\s*$", re.M)


@dataclass(frozen=True)
class Prompts:
    """A loaded set of templates.

    Attributes:
        templates: Template name -> text; feedback sections are named ``feedback.<section>``.
        version: Short hash of all templates.
        directory: Where they were loaded from.
        system_override: A verbatim main-loop system prompt (from a file), or ``None``.
        verify_override: A verbatim verification system prompt (from a file), or ``None``.
        tools: The extra tools that are on (canonical order); their texts come from
            ``extra_tools.txt`` (templates ``extra_tools.<section>``).
    """

    templates: Mapping[str, str]
    version: str
    directory: Path
    system_override: str | None = None
    verify_override: str | None = None
    tools: tuple[str, ...] = ()

    def render(self, name: str, **values: object) -> str:
        """Fill a template's ``$placeholders``.

        Raises:
            KeyError: If the template or one of its placeholders is missing (a bug in the caller
                or in a custom prompt folder).
        """
        if name not in self.templates:
            raise KeyError(f"no prompt template {name!r} in {self.directory}")
        return Template(self.templates[name]).substitute({k: str(v) for k, v in values.items()})

    def feedback(self, section: str, **values: object) -> str:
        """Fill the ``[section]`` of ``feedback.txt``."""
        return self.render(f"feedback.{section}", **values)

    def tool_text(self, section: str, **values: object) -> str:
        """Fill the ``[section]`` of ``extra_tools.txt`` (the extra tools' texts)."""
        return self.render(f"{_EXTRA_FILE}.{section}", **values)

    def system(self, protocol: str) -> str:
        """The main-loop system prompt of a protocol (``"text"`` or ``"native"``).

        With extra tools on, their guidance follows the guidelines and (text protocol) their
        descriptions follow the paper tools'; with none on, the prompt is the paper tools' alone.
        """
        if self.system_override is not None:
            return self.system_override
        guidelines = self.templates["guidelines"]
        if self.tools:
            guides = [self.tool_text("guide_header"), *(self.tool_text(EXTRA_TOOLS[t].guide) for t in self.tools)]
            guidelines = guidelines + "\n\n" + "\n".join(guides)
        if protocol == "native":
            return self.render("system_native", guidelines=guidelines)
        return self.render("system_text", guidelines=guidelines, tools=tools_prompt_text(self.tools))

    def verify_system(self) -> str:
        """The verification system prompt."""
        if self.verify_override is not None:
            return self.verify_override
        return self.render("verify_system")


def default_prompt_dir() -> Path:
    """The shipped templates: ``sam3agent/prompt_templates`` in a wheel, else the repository's ``prompts/``."""
    packaged = Path(__file__).resolve().parent / "prompt_templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "prompts"


def load_prompts(directory: Path | str | None = None, *, system_file: Path | str | None = None,
                 verify_file: Path | str | None = None, tools: Sequence[str] = ()) -> Prompts:
    """Load the templates of a folder (cached until a file changes), plus verbatim prompt files.

    Args:
        directory: A folder with the template files; ``None`` for the shipped ones.
        system_file: A file whose whole text is the main-loop system prompt, used as written.
        verify_file: A file whose whole text is the verification system prompt, used as written.
        tools: Extra tools that are on (``AgentConfig.tools``); their texts and descriptions then
            count in the version.

    Raises:
        FileNotFoundError: If a template file or a prompt file is missing, or an extra tool is on
            and ``extra_tools.txt`` (or a section of it the tool needs) is missing; the message
            names it.
        ValueError: If a prompt file is empty or not UTF-8 text, or a tool name is unknown.
    """
    folder = Path(directory).resolve() if directory is not None else default_prompt_dir()
    prompts = _with_tools(_load(folder, _stamp(folder)), canonical_extras(tools))
    system = _read_prompt_file(system_file, "system_prompt_file")
    verify = _read_prompt_file(verify_file, "verify_prompt_file")
    if system is None and verify is None:
        return prompts
    digest = hashlib.sha256(prompts.version.encode())
    for key, text in (("system_file", system), ("verify_file", verify)):
        if text is not None:
            digest.update(key.encode() + b"\0" + text.encode() + b"\0")
    return replace(prompts, version=digest.hexdigest()[:12], system_override=system, verify_override=verify)


def _read_prompt_file(path: Path | str | None, what: str) -> str | None:
    """The text of a user-supplied prompt file (``None`` for no file)."""
    if path is None:
        return None
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{what}: no such file {file}; give the path of a plain-text prompt file")
    stat = file.stat()
    try:
        text = _read_text(file, (stat.st_mtime_ns, stat.st_size))
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: {file} is not UTF-8 text ({e}); save it as UTF-8") from e
    if not text:
        raise ValueError(f"{what}: {file} is empty; a prompt file must hold the prompt text")
    return text


@lru_cache(maxsize=16)
def _read_text(file: Path, stamp: tuple[int, int]) -> str:
    """A prompt file's stripped text; ``stamp`` (mtime, size) only makes an edited file miss the cache."""
    return file.read_text(encoding="utf-8").strip()


def _with_tools(prompts: Prompts, tools: tuple[str, ...]) -> Prompts:
    """``prompts`` with extra tools on: their sections checked, and counted in the version."""
    if not tools:
        return prompts
    sections = [*_EXTRA_COMMON, *(s for t in tools for s in (EXTRA_TOOLS[t].guide, *EXTRA_TOOLS[t].feedback))]
    missing = [s for s in dict.fromkeys(sections) if f"{_EXTRA_FILE}.{s}" not in prompts.templates]
    if missing:
        raise FileNotFoundError(
            f"{_EXTRA_FILE}.txt in {prompts.directory} lacks section(s) {', '.join(f'[{s}]' for s in missing)}, "
            f"which the extra tool(s) {', '.join(tools)} need; copy them from the shipped {default_prompt_dir()}"
            f"/{_EXTRA_FILE}.txt, or turn the tool(s) off"
        )
    digest = hashlib.sha256(prompts.version.encode())
    for section in dict.fromkeys(sections):
        digest.update(section.encode() + b"\0" + prompts.templates[f"{_EXTRA_FILE}.{section}"].encode() + b"\0")
    digest.update(tools_prompt_text(tools).encode())
    return replace(prompts, version=digest.hexdigest()[:12], tools=tools)


def _stamp(directory: Path) -> tuple[tuple[int, int], ...]:
    """Modification time and size of every template file (``(-1, -1)`` when missing)."""
    stamps = []
    for name in (*_FILES, _EXTRA_FILE):
        try:
            stat = (directory / f"{name}.txt").stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((-1, -1))
    return tuple(stamps)


@lru_cache(maxsize=16)
def _load(directory: Path, stamp: tuple[tuple[int, int], ...]) -> Prompts:
    """Read and hash the templates; ``stamp`` only makes edited files miss the cache."""
    templates: dict[str, str] = {}
    for name in _FILES:
        path = directory / f"{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"prompt template {path.name} is missing from {directory}; a prompt folder needs "
                f"{', '.join(f + '.txt' for f in _FILES)}"
            )
        text = path.read_text(encoding="utf-8")
        if name == "feedback":
            templates.update({f"feedback.{k}": v for k, v in _sections(text).items()})
        else:
            templates[name] = text.strip()
    digest = hashlib.sha256()
    for key in sorted(templates):  # the extra tools' texts count only while one is on (_with_tools)
        digest.update(key.encode() + b"\0" + templates[key].encode() + b"\0")
    digest.update(tools_prompt_text().encode())
    extra = directory / f"{_EXTRA_FILE}.txt"
    if extra.is_file():
        templates.update({f"{_EXTRA_FILE}.{k}": v for k, v in _sections(extra.read_text(encoding="utf-8")).items()})
    return Prompts(templates=templates, version=digest.hexdigest()[:12], directory=directory)


def _sections(text: str) -> dict[str, str]:
    """Split ``[name]`` sections; text before the first section is a comment."""
    parts = _SECTION.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}

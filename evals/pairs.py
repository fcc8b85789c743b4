"""A list of (image, query) pairs in a JSON Lines file: the input of ``sam3agent batch``.

Each non-blank line is one JSON object::

    {"id": "kitchen-3", "image": "photos/kitchen.jpg", "query": "the mug nearest the kettle"}

* ``image``: a path, relative paths taken from the folder of the pairs file;
* ``query``: what to segment (checked as the agent checks it: non-empty, encodable);
* ``id`` (optional): a string that names the pair's files (``masks/<id>.png``), so it has no
  ``/``, ``\\`` or control character, does not start with ``.`` and has at most 200 characters;
  without one, the pair's id is its line number (``"1"`` for the first line). Ids must be unique.

Other keys are ignored. Every problem found (bad JSON, a missing key, a bad or duplicate id, an image
file that does not exist) is reported at once, by line number, as an :class:`~evals.errors.EvalInputError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import EvalInputError
from sam3agent.agent import check_query

MAX_ID_CHARS = 200
_SHOWN = 8  # problems listed in one error message
_BAD_ID = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Pair:
    """One line of a pairs file.

    Attributes:
        id: The pair's id (the line number when the line has none).
        image: The image path, resolved against the pairs file's folder.
        image_text: The image path as the line wrote it (recorded, and part of the list's identity).
        query: The query, stripped.
        line: The 1-based line number.
    """

    id: str
    image: Path
    image_text: str
    query: str
    line: int


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a pair id (``None``: it can)."""
    if not isinstance(value, str):
        return f"the id must be a string, got {json.dumps(value)} (write it in quotes)"
    if not value:
        return "the id is empty"
    if len(value) > MAX_ID_CHARS:
        return f"the id has {len(value)} characters (at most {MAX_ID_CHARS})"
    if value.startswith(".") or _BAD_ID.search(value):
        return f"the id {json.dumps(value)} cannot name a file (no '/', '\\', control characters or leading '.')"
    return None


def _parse_line(text: str, number: int, folder: Path) -> Pair | str:
    """The pair on one line, or what is wrong with it."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return f"not JSON ({e})"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object with \"image\" and \"query\""
    image, query = value.get("image"), value.get("query")
    if not isinstance(image, str) or not image.strip():
        return "\"image\" is missing or not a non-empty string (a path to the image file)"
    if not isinstance(query, str):
        return "\"query\" is missing or not a string"
    try:
        query = check_query(query)
    except ValueError as e:
        return f"bad \"query\": {e}"
    pair_id = value.get("id", str(number))
    problem = id_problem(pair_id)
    if problem:
        return problem
    path = Path(image).expanduser()
    return Pair(id=pair_id, image=path if path.is_absolute() else folder / path, image_text=image, query=query,
                line=number)


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise EvalInputError(f"pairs file {path} not found; pass a JSON Lines file with one "
                             "{\"image\": PATH, \"query\": TEXT} object per line") from e
    except IsADirectoryError as e:
        raise EvalInputError(f"pairs file {path} is a folder; pass the JSON Lines file itself") from e
    except OSError as e:
        raise EvalInputError(f"cannot read pairs file {path}: {e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise EvalInputError(f"{path} line {line} is not UTF-8 ({e.reason}); save the file as UTF-8") from e
    return text.splitlines()


def _raise(path: Path, problems: Sequence[str]) -> None:
    shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else "")
    raise EvalInputError(f"{path} has {len(problems)} bad line(s): {shown}")


def load_pairs(path: str | Path, *, check_images: bool = True) -> list[Pair]:
    """Read a pairs file (see the module docstring), in file order.

    Args:
        path: The JSON Lines file.
        check_images: Also require every image path to be an existing file.

    Raises:
        EvalInputError: The file is missing, unreadable, not UTF-8 or holds no pair; or lines are
            bad, ids repeat, or images are missing (every such line named, the first few shown).
    """
    path = Path(path)
    folder = path.parent
    pairs: list[Pair] = []
    problems: list[str] = []
    for number, text in enumerate(_read_lines(path), start=1):
        if not text.strip():
            continue
        parsed = _parse_line(text, number, folder)
        if isinstance(parsed, str):
            problems.append(f"line {number}: {parsed}")
        else:
            pairs.append(parsed)
    if problems:
        _raise(path, problems)
    lines_of: dict[str, list[int]] = {}
    for pair in pairs:
        lines_of.setdefault(pair.id, []).append(pair.line)
    duplicates = [f"id {json.dumps(i)} on lines {', '.join(map(str, lines))}" for i, lines in lines_of.items()
                  if len(lines) > 1]
    if duplicates:
        raise EvalInputError(f"{path} repeats ids (each pair needs its own; a line without an id has its line "
                             f"number): {'; '.join(duplicates[:_SHOWN])}")
    if not pairs:
        raise EvalInputError(f"{path} holds no pair; write one {{\"image\", \"query\"}} object per line")
    if check_images:
        missing = [f"line {p.line}: image {p.image} not found" for p in pairs if not p.image.is_file()]
        if missing:
            _raise(path, missing)
    return pairs


def pairs_identity(pairs: Sequence[Pair]) -> dict[str, Any]:
    """The list's identity for a run's manifest: name, count and a fingerprint of every id, image and query.

    The fingerprint covers the image paths as written (not the image bytes), so a resumed run
    refuses a list whose pairs changed, and accepts the same list moved to another folder.
    """
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(json.dumps([p.id, p.image_text, p.query], ensure_ascii=False).encode("utf-8") + b"\n")
    return {"name": "pairs", "n_samples": len(pairs), "fingerprint": digest.hexdigest()}

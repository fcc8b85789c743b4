"""The body of ``POST /v1/segment``: one pydantic model for the JSON and the multipart forms.

:class:`SegmentRequest` declares the fields (``extra="forbid"``, strict types); :func:`parse_json_body`
and :func:`parse_form_fields` turn a body into it, and every refusal into a 400 :class:`ServeError`
whose message names the field and the fix. The query is only type-checked here: whether it is blank
is decided by :func:`sam3agent.app.serve.common.check_query`, as for the MCP server and the chat tool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from sam3agent.app.serve.limits import ServeError, bad_request
from sam3agent.parsing import json_nesting_problem

__all__ = ["MAX_JSON_DEPTH", "SegmentRequest", "check_json_depth", "parse_flag", "parse_form_fields",
           "parse_json_body"]

MAX_JSON_DEPTH = 16  # the body is a flat object; anything deeper is refused before json.loads recurses
_MAX_JSON_TOKENS = 10_000  # brackets and strings one body may contain (a flat request has a dozen)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_FLAT_OBJECT = 'send a flat object {"image": base64, "query": "..."}'
BOTH_IMAGES = "send either image or image_path, not both"
NO_IMAGE = "image is required: a file field (multipart), or base64 / a data URL (JSON)"


class SegmentRequest(BaseModel):
    """The fields of a segment request, whether sent as JSON or as a multipart form.

    Exactly one image source is required: ``image`` (base64 or a data URL in JSON, a file or text
    field in a form) or ``image_path``. A form's uploaded file is not a field value: the validation
    context ``{"upload": True}`` says one was sent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    image: str | None = Field(None, description="the image as base64 bytes or a data URL; in a form, a file")
    image_path: str | None = Field(None, min_length=1, description="a file inside an allowed root, instead "
                                                                   "of image")
    query: str | None = Field(None, description="what to segment, in plain words")
    overlay: bool = Field(False, description="true to add overlay_png: the image with the numbered masks")

    @model_validator(mode="after")
    def _one_image(self, info: ValidationInfo) -> SegmentRequest:
        uploaded = bool((info.context or {}).get("upload"))
        if (self.image is not None or uploaded) and self.image_path is not None:
            raise ValueError(BOTH_IMAGES)
        if self.image is None and not uploaded and self.image_path is None:
            raise ValueError(NO_IMAGE)
        return self


def _problem(error: ValidationError) -> ServeError:
    """One 400 error listing every problem pydantic found, each naming its field."""
    unknown = [str(e["loc"][0]) for e in error.errors() if e["type"] == "extra_forbidden"]
    problems = [f"unknown field(s) {unknown}; expected {', '.join(SegmentRequest.model_fields)}"] if unknown else []
    for e in error.errors(include_url=False):
        if e["type"] == "extra_forbidden":
            continue
        if e["type"] == "value_error":  # raised by _one_image: its message says it all
            problems.append(str(e["ctx"]["error"]))
            continue
        name = str(e["loc"][0])
        problems.append(f"{name}: {e['msg']} ({SegmentRequest.model_fields[name].description})")
    return bad_request("; ".join(problems))


def check_json_depth(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON body nested deeper than ``max_depth`` before it is parsed.

    Raises:
        ServeError: 400 when the body nests deeper than ``max_depth`` or has more than
            ``_MAX_JSON_TOKENS`` brackets and strings (see :func:`sam3agent.parsing.json_nesting_problem`).
    """
    problem = json_nesting_problem(body, max_depth, max_tokens=_MAX_JSON_TOKENS)
    if problem == "depth":
        raise bad_request(f"the JSON body is nested more than {max_depth} levels deep; {_FLAT_OBJECT}")
    if problem == "tokens":
        raise bad_request(f"the JSON body has more than {_MAX_JSON_TOKENS} brackets and strings; {_FLAT_OBJECT}")


def parse_json_body(body: bytes) -> SegmentRequest:
    """Check the nesting, parse and validate a JSON body.

    Raises:
        ServeError: 400 (too deep, not JSON, not an object, an unknown field, a wrong type, no image
            or two images).
    """
    check_json_depth(body)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"the body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise bad_request('the JSON body must be an object: {"image": base64, "query": "..."}')
    try:
        return SegmentRequest.model_validate(data)
    except ValidationError as e:
        raise _problem(e) from e


def parse_form_fields(fields: Mapping[str, str], *, upload: bool) -> SegmentRequest:
    """Validate a multipart form's text fields (other form parts are ignored, as they always were).

    Args:
        fields: The form's text values by name; ``overlay`` is read as a flag (see :func:`parse_flag`).
        upload: Whether the form carried an ``image`` file.

    Raises:
        ServeError: 400 (a bad flag, no image or two images).
    """
    values: dict[str, Any] = {name: fields[name] for name in SegmentRequest.model_fields if name in fields}
    if "overlay" in values:
        values["overlay"] = parse_flag(values["overlay"], "overlay")
    try:
        return SegmentRequest.model_validate(values, context={"upload": upload})
    except ValidationError as e:
        raise _problem(e) from e


def parse_flag(value: str | None, name: str) -> bool:
    """A form or query-string flag: ``1/true/yes/on`` or ``0/false/no/off`` (any case; blank: false).

    Raises:
        ServeError: 400 for any other text.
    """
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_request(f"{name} must be 1/true or 0/false, got {value!r}")

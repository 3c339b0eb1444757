"""Whatever text or data the loader is fed, only ManifestError comes out, with a field path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bottle.core.errors import DOCUMENT, FRONT_MATTER, ManifestError
from bottle.core.manifest_load import parse_json_manifest, parse_markdown_agent

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
CLAUDE_JSON = (EXAMPLES / "claude-code.json").read_text()
GIT_JSON = (EXAMPLES / "generic-git.json").read_text()
REVIEWER_MD = (EXAMPLES / "agents" / "reviewer.md").read_text()

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_only_manifest_errors(call: Any) -> ManifestError | None:
    """Run ``call``; it may succeed, or raise ManifestError with a field path. Nothing else."""
    try:
        call()
    except ManifestError as err:
        assert err.field, "a ManifestError without a field path"
        assert err.source in str(err)
        assert "\n" not in str(err)
        return err
    return None


@st.composite
def garbled(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters deleted, inserted or replaced."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        pos = draw(st.integers(0, max(len(chars) - 1, 0)))
        if op == "delete" and chars:
            del chars[pos]
        elif op == "insert":
            chars.insert(pos, draw(st.sampled_from(list('{}[]:,"\'-\n #&*!|>%@`\\0aZ\t'))))
        elif chars:
            chars[pos] = draw(st.characters())
    return "".join(chars)


@FUZZ
@given(st.one_of(garbled(CLAUDE_JSON), garbled(GIT_JSON)))
def test_garbled_json_gives_only_manifest_errors(text: str) -> None:
    assert_only_manifest_errors(lambda: parse_json_manifest(text, "m.json", "/p"))


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_as_json(text: str) -> None:
    err = assert_only_manifest_errors(lambda: parse_json_manifest(text, "m.json", "/p"))
    if err is not None and not text.strip().startswith("{"):
        assert err.field == DOCUMENT


def _front_matter_garbled(draw: st.DrawFn) -> str:
    head, front, body = REVIEWER_MD.split("---", 2)
    return f"{head}---{draw(garbled(front))}---{body}"


@FUZZ
@given(st.data())
def test_garbled_front_matter_gives_only_manifest_errors(data: st.DataObject) -> None:
    text = _front_matter_garbled(data.draw)
    assert_only_manifest_errors(lambda: parse_markdown_agent(text, "r.md", "/p"))


@FUZZ
@given(garbled(REVIEWER_MD))
def test_garbled_markdown_file_gives_only_manifest_errors(text: str) -> None:
    assert_only_manifest_errors(lambda: parse_markdown_agent(text, "r.md", "/p"))


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_front_matter_text(front: str) -> None:
    assume("---" not in front)
    assert_only_manifest_errors(lambda: parse_markdown_agent(f"---\n{front}\n---\nbody\n", "r.md", "/p"))


# -- wrong types at random paths --------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for key in path:
        text = f"{text}[{key}]" if isinstance(key, int) else (f"{text}.{key}" if text else str(key))
    return text


def _replace(doc: Any, path: tuple[Any, ...], value: object) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _assert_error_at_or_above(err: ManifestError | None, path: str) -> None:
    if err is None:  # e.g. null where null is allowed
        return
    assert err.field != DOCUMENT
    if err.field == FRONT_MATTER:  # the agent as a whole (image and dockerfile both gone)
        return
    assert path == err.field or path.startswith(err.field + ".") or path.startswith(err.field + "["), (
        f"error at {err.field!r} for a wrong type at {path!r}"
    )


@FUZZ
@given(st.data())
def test_wrong_types_at_random_paths_of_a_json_manifest(data: st.DataObject) -> None:
    doc = json.loads(data.draw(st.sampled_from([CLAUDE_JSON, GIT_JSON])))
    path = data.draw(st.sampled_from(_paths(doc)))
    original = _kind(_replace_target(doc, path))
    value = data.draw(JSON_VALUES.filter(lambda v: _kind(v) != original))
    text = json.dumps(_replace(doc, path, value))
    err = assert_only_manifest_errors(lambda: parse_json_manifest(text, "m.json", "/p"))
    _assert_error_at_or_above(err, _dotted(path))


@FUZZ
@given(st.data())
def test_wrong_types_at_random_paths_of_front_matter(data: st.DataObject) -> None:
    _head, front, body = REVIEWER_MD.split("---", 2)
    doc = yaml.safe_load(front)
    path = data.draw(st.sampled_from(_paths(doc)))
    original = _kind(_replace_target(doc, path))
    value = data.draw(JSON_VALUES.filter(lambda v: _kind(v) != original))
    text = "---\n" + yaml.safe_dump(_replace(doc, path, value)) + "---" + body
    err = assert_only_manifest_errors(lambda: parse_markdown_agent(text, "r.md", "/p"))
    _assert_error_at_or_above(err, _dotted(path))


def _replace_target(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc

"""Identities: slugs of odd agent names, random suffixes, validation for resume."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.adapters.local.system import SystemRandomness
from bottle.core.identity import (
    IDENTITY_SUFFIX_ALPHABET,
    SLUG_MAX_LENGTH,
    InvalidIdentity,
    is_identity,
    new_identity,
    parse_identity,
    slugify,
)
from bottle.core.naming import ROLES, resource_name
from bottle.ports.errors import InputError

# What Docker and Podman accept as a container or network name.
ENGINE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
DNS_LABEL_MAX = 63


class FixedRandomness:
    def __init__(self, value: str) -> None:
        self.value = value
        self.calls: list[tuple[str, int]] = []

    def choice(self, alphabet: str, count: int) -> str:
        self.calls.append((alphabet, count))
        return self.value


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("implementer", "implementer"),
        ("Implementer", "implementer"),
        ("My Agent", "my-agent"),
        ("my_agent.v2", "my-agent-v2"),
        ("  --a--b--  ", "a-b"),
        ("a  \t b", "a-b"),
        ("Café Bot", "cafe-bot"),
        ("naïve Ünïcödé", "naive-unicode"),
        ("ＡＢＣ１２３", "abc123"),  # full-width forms have ASCII compatibility forms
        ("日本語", "agent"),
        ("日本語 reviewer", "reviewer"),
        ("reviewer—日本", "reviewer"),
        ("🙂🙂", "agent"),
        ("", "agent"),
        ("---", "agent"),
        ("a/b@c:d", "a-b-c-d"),
        ("x\u3000y", "x-y"),  # ideographic space separates words
    ],
)
def test_slugify_table(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_long_name_is_cut_on_a_word_boundary() -> None:
    name = "the quick brown fox jumps over the lazy dog again and again"
    slug = slugify(name)
    assert len(slug) <= SLUG_MAX_LENGTH
    assert slug == "the-quick-brown-fox-jumps-over"
    assert name.replace(" ", "-").startswith(slug)


def test_long_single_word_is_cut_mid_word() -> None:
    assert slugify("a" * 100) == "a" * SLUG_MAX_LENGTH


def test_early_boundary_is_not_used_for_the_cut() -> None:
    # the only boundary is at position 2: cutting there would lose the name
    slug = slugify("ab-" + "c" * 60)
    assert slug == ("ab-" + "c" * 60)[:SLUG_MAX_LENGTH]


@given(st.text())
def test_every_name_gives_a_valid_slug(name: str) -> None:
    slug = slugify(name)
    assert SLUG.match(slug)
    assert len(slug) <= SLUG_MAX_LENGTH
    assert slugify(slug) == slug


@given(st.text(), st.text(alphabet=IDENTITY_SUFFIX_ALPHABET, min_size=5, max_size=5))
def test_every_name_gives_valid_resource_names(name: str, suffix: str) -> None:
    identity = new_identity(name, FixedRandomness(suffix))
    assert is_identity(identity)
    assert parse_identity(identity) == identity
    for role in ROLES:
        resource = resource_name(role, identity)
        assert ENGINE_NAME.match(resource), resource
        # containers find each other by this name: it must be one DNS label
        assert len(resource) <= DNS_LABEL_MAX, resource


def test_new_identity_uses_five_base36_characters_from_the_port() -> None:
    rng = FixedRandomness("k3x9q")
    assert new_identity("Implementer", rng) == "implementer-k3x9q"
    assert rng.calls == [("0123456789abcdefghijklmnopqrstuvwxyz", 5)]


@pytest.mark.parametrize("bad", ["k3x9", "k3x9qq", "K3X9Q", "k3-9q"])
def test_new_identity_rejects_a_broken_randomness_port(bad: str) -> None:
    with pytest.raises(ValueError, match="randomness"):
        new_identity("a", FixedRandomness(bad))


def test_two_launches_with_real_randomness_differ() -> None:
    rng = SystemRandomness()
    identities = {new_identity("implementer", rng) for _ in range(20)}
    assert len(identities) == 20
    assert all(i.startswith("implementer-") and is_identity(i) for i in identities)


@pytest.mark.parametrize(
    "text",
    ["implementer-k3x9q", "agent-00000", "my-agent-v2-zzzzz", "a-b-c-12345", "x" * SLUG_MAX_LENGTH + "-abcde"],
)
def test_is_identity_accepts(text: str) -> None:
    assert is_identity(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "implementer",
        "implementer-k3x9",
        "implementer-k3x9qq",
        "Implementer-k3x9q",
        "implementer-K3X9Q",
        "-k3x9q",
        "a--b-k3x9q",
        "implementer_k3x9q",
        " implementer-k3x9q",
        "../../etc-k3x9q",
        "x" * (SLUG_MAX_LENGTH + 1) + "-abcde",
        "implementer-k3x9q\n",
    ],
)
def test_is_identity_rejects(text: str) -> None:
    assert not is_identity(text)


def test_parse_identity_strips_whitespace() -> None:
    assert parse_identity("  implementer-k3x9q\n") == "implementer-k3x9q"


def test_parse_identity_error_is_input_error_with_hint() -> None:
    with pytest.raises(InvalidIdentity) as info:
        parse_identity("implementer")
    err = info.value
    assert isinstance(err, InputError) and err.exit_code == 2
    assert "'implementer' is not a bottle identity" in str(err)
    assert err.hint and "bottle ls" in err.hint


def test_parse_identity_error_shortens_huge_input() -> None:
    with pytest.raises(InvalidIdentity) as info:
        parse_identity("x" * 10_000)
    assert len(str(info.value)) < 200

"""The secret scanner: known formats, brokered secrets in every encoding, streams, no leaks in findings."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bottle.core.secretscan import (
    BROKERED,
    BrokeredSecret,
    Finding,
    SecretScanner,
    encoded_forms,
)

# Shaped like the real thing, valid for no service.
FAKE = {
    "anthropic-api-key": "sk-ant-api03-" + "Zq9xW2vL7mN4pR8sT1uY6bC3dF5gH0jK" * 3,
    "openai-api-key": "sk-proj-" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY",
    "github-token": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "gitlab-token": "glpat-" + "xY7zW3vU9tS5rQ1pO2nM",
    "aws-access-key-id": "AKIAIOSFODNN7EXAMPLE",
    "google-api-key": "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "slack-token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    "stripe-live-key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "private-key": "-----BEGIN OPENSSH PRIVATE KEY-----",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
}
BROKERED_VALUE = "tok/Br0kered+Secret=Value-0123456789abcdef"
SCANNER = SecretScanner([BrokeredSecret("BOTTLE_TOKEN_0", BROKERED_VALUE)])


def kinds(findings: list[Finding]) -> set[str]:
    return {f.kind for f in findings}


@pytest.mark.parametrize("kind", sorted(FAKE))
def test_each_known_format_is_found_raw(kind: str) -> None:
    text = f"config: value={FAKE[kind]}; done"
    findings = SCANNER.scan(text, "body")
    assert kind in kinds(findings)
    f = next(f for f in findings if f.kind == kind)
    assert text.encode()[f.start : f.end] == FAKE[kind].encode() or kind == "private-key"


@pytest.mark.parametrize("kind", sorted(k for k in FAKE if k != "private-key"))
@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"note: "])
def test_known_formats_are_found_base64_and_hex_encoded(kind: str, prefix: bytes) -> None:
    payload = prefix + b" " + FAKE[kind].encode() + b" trailer"
    for encoded, encoding in (
        (base64.b64encode(payload), "base64"),
        (base64.urlsafe_b64encode(payload).rstrip(b"="), "base64"),
        (binascii.hexlify(payload), "hex"),
        (binascii.hexlify(payload).upper(), "hex"),
    ):
        findings = SCANNER.scan(b"data=" + encoded + b"&x=1", "url")
        assert (kind, encoding) in {(f.kind, f.encoding) for f in findings}, (kind, encoding, prefix)


def test_percent_encoded_known_format_is_found() -> None:
    text = "/search?q=" + quote("key " + FAKE["github-token"], safe="")
    findings = SCANNER.scan(text, "url")
    assert "github-token" in kinds(findings)


@pytest.mark.parametrize(
    "text",
    [
        "task-management-system-overview-2024",  # 'sk-' inside a word
        "sk-learn-documentation-for-beginners",  # a slug, not a key
        "https://pypi.org/simple/requests/",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "AKIA is a prefix, AKIAIOSFODNN7 is too short",
        "application/json; charset=utf-8",
        "-----BEGIN CERTIFICATE-----",
        "deadbeef" * 10,  # hex of nothing secret
        base64.b64encode(b"hello world, nothing to see here at all").decode(),
        "bottle-placeholder-not-a-secret",
    ],
)
def test_ordinary_text_has_no_findings(text: str) -> None:
    assert SCANNER.scan(text, "body") == []


def test_aws_secret_key_is_found_next_to_a_key_id_or_after_its_name() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    near = SCANNER.scan(f"AKIAIOSFODNN7EXAMPLE:{secret}", "body")
    assert {"aws-access-key-id", "aws-secret-access-key"} <= kinds(near)
    named = SCANNER.scan(f'AWS_SECRET_ACCESS_KEY="{secret}"', "body")
    assert kinds(named) == {"aws-secret-access-key"}
    assert SCANNER.scan(f"checksum {secret}", "body") == []


@pytest.mark.parametrize(
    ("encode", "encoding"),
    [
        (lambda v: v, "raw"),
        (lambda v: quote(v, safe="").encode(), "url"),
        (lambda v: binascii.hexlify(v), "hex"),
        (lambda v: binascii.hexlify(v).upper(), "hex"),
        (lambda v: base64.b64encode(v), "base64"),
        (lambda v: base64.b64encode(b"a" + v), "base64"),
        (lambda v: base64.b64encode(b"ab" + v), "base64"),
        (lambda v: base64.urlsafe_b64encode(b"Z" + v).rstrip(b"="), "base64"),
    ],
)
def test_brokered_secret_is_found_in_every_encoding(encode, encoding: str) -> None:  # type: ignore[no-untyped-def]
    encoded = encode(BROKERED_VALUE.encode())
    findings = SCANNER.scan(b'{"blob": "' + encoded + b'"}', "body")
    brokered = [f for f in findings if f.kind == BROKERED]
    assert brokered, encoding
    assert brokered[0].slot == "BOTTLE_TOKEN_0"
    assert encoding in {f.encoding for f in brokered}


def test_percent_encoded_secret_with_lowercase_escapes_and_mixed_encoding_is_found() -> None:
    value = "tok/with+special=chars&more-0123456789"
    scanner = SecretScanner([BrokeredSecret("BOTTLE_TOKEN_3", value)])
    lower = quote(value, safe="").lower().replace("tok", "tok")
    assert scanner.scan("/x?" + lower, "url")
    partly = value.replace("/", "%2F")  # only one character encoded
    assert scanner.scan("/x?q=" + partly, "url")


def test_secret_in_basic_auth_shape_is_found() -> None:
    header = "Basic " + base64.b64encode(f"user:{BROKERED_VALUE}".encode()).decode()
    assert any(f.kind == BROKERED for f in SCANNER.scan(header, "header:authorization"))


def test_encoded_forms_cover_all_alignments_and_skip_short_values() -> None:
    forms = encoded_forms(BROKERED_VALUE.encode())
    b64 = [n for e, n in forms if e == "base64"]
    assert len(b64) >= 3
    for k in range(3):
        blob = base64.b64encode(b"\xff" * k + BROKERED_VALUE.encode() + b"\x00")
        assert any(n in blob for n in b64), k
    short = encoded_forms(b"abc123")
    assert {e for e, _ in short} == {"raw", "hex"}


def test_findings_never_contain_the_secret() -> None:
    text = f"a={BROKERED_VALUE}&b={FAKE['github-token']}&c={base64.b64encode(BROKERED_VALUE.encode()).decode()}"
    findings = SCANNER.scan(text, "url")
    assert findings
    dumped = msgspec.json.encode(findings) + repr(findings).encode() + " ".join(f.describe() for f in findings).encode()
    assert BROKERED_VALUE.encode() not in dumped
    assert FAKE["github-token"].encode() not in dumped
    assert FAKE["github-token"][4:12].encode() not in dumped


def test_brokered_secret_repr_hides_the_value() -> None:
    assert BROKERED_VALUE not in repr(BrokeredSecret("BOTTLE_TOKEN_0", BROKERED_VALUE))
    with pytest.raises(ValueError):
        BrokeredSecret("BOTTLE_TOKEN_0", "")


def test_redact_replaces_every_secret_and_keeps_the_rest() -> None:
    text = f"/v1/x?key={FAKE['aws-access-key-id']}&t={BROKERED_VALUE}&page=2"
    red = SCANNER.redact(text)
    assert FAKE["aws-access-key-id"] not in red and BROKERED_VALUE not in red
    assert red.startswith("/v1/x?key=[REDACTED:aws-access-key-id]")
    assert red.endswith("&page=2")
    assert SCANNER.scan(red, "x") == []


def test_scan_fields_reports_each_field_with_its_own_offsets() -> None:
    fields = [
        ("url", "/path?x=1"),
        ("header:user-agent", "curl/8"),
        ("header:x-token", "value " + FAKE["github-token"]),
    ]
    findings = SCANNER.scan_fields(fields)
    assert [(f.location, f.kind, f.start) for f in findings] == [("header:x-token", "github-token", 6)]


# -- streams ------------------------------------------------------------------


def stream_all(chunks: list[bytes], scanner: SecretScanner = SCANNER) -> tuple[bytes, list[Finding], bytes]:
    """Feed chunks; return (bytes released before the first finding, findings, everything released)."""
    scan = scanner.stream("body")
    released = b""
    before = None
    for chunk in chunks:
        out, new = scan.feed(chunk)
        if new and before is None:
            before = released  # the guard withholds this chunk's output and all after it
        released += out
    released += scan.finish()
    return (before if before is not None else released), scan.findings, released


def test_stream_releases_everything_when_clean_and_keeps_bytes_in_order() -> None:
    chunks = [bytes([65 + i % 26]) * 1000 for i in range(50)]
    _, findings, released = stream_all(chunks)
    assert findings == []
    assert released == b"".join(chunks)


@pytest.mark.parametrize("split", [1, 5, 10, 20, len(BROKERED_VALUE) - 1])
def test_stream_finds_a_secret_split_across_chunks_before_releasing_any_of_it(split: int) -> None:
    secret = BROKERED_VALUE.encode()
    chunks = [b"a" * 5000 + secret[:split], secret[split:] + b"b" * 5000]
    before, findings, _ = stream_all(chunks)
    assert any(f.kind == BROKERED for f in findings)
    assert secret[:split] not in before[-len(secret) :] or len(before) <= 5000 - len(secret)
    assert secret not in before


def test_stream_finds_a_known_format_split_one_byte_per_chunk() -> None:
    data = b"x" * 3000 + FAKE["github-token"].encode() + b"y" * 3000
    before, findings, _ = stream_all([bytes([b]) for b in data])
    assert [f.kind for f in findings] == ["github-token"]
    assert findings[0].start == 3000  # absolute offset in the whole body
    assert FAKE["github-token"].encode()[:4] not in before


def test_stream_memory_is_bounded_by_chunk_plus_overlap() -> None:
    scan = SCANNER.stream("body")
    for _ in range(200):
        scan.feed(b"z" * 65536)
        assert len(scan._tail) <= SCANNER.overlap  # noqa: SLF001 - the bound is the point
    assert scan.total == 200 * 65536


# -- properties ---------------------------------------------------------------

token_alphabet = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
secrets_strategy = st.text(token_alphabet, min_size=16, max_size=80).filter(lambda s: len(set(s)) > 6)
filler = st.binary(max_size=3000)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secrets_strategy, before=filler, after=filler, encoding=st.sampled_from(["raw", "url", "hex", "base64"]))
def test_planted_brokered_secret_is_found_at_any_offset_in_any_encoding(
    secret: str, before: bytes, after: bytes, encoding: str
) -> None:
    raw = secret.encode()
    if encoding == "raw":
        planted = raw
    elif encoding == "url":
        planted = quote(secret, safe="").encode()
    elif encoding == "hex":
        planted = binascii.hexlify(raw)
    else:
        planted = base64.b64encode(before[-2:] + raw + after[:2])
    data = before + b"\n" + planted + b"\n" + after
    scanner = SecretScanner([BrokeredSecret("BOTTLE_TOKEN_1", secret)])
    findings = scanner.scan(data, "body")
    assert any(f.kind == BROKERED and f.slot == "BOTTLE_TOKEN_1" for f in findings)
    for f in findings:
        assert raw not in msgspec.json.encode(f)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=secrets_strategy,
    before=st.binary(min_size=0, max_size=4000),
    after=st.binary(max_size=2000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30),
)
def test_streamed_secret_is_found_and_never_released_whatever_the_chunking(
    secret: str, before: bytes, after: bytes, sizes: list[int]
) -> None:
    raw = secret.encode()
    assume(raw not in before)
    data = before + raw + after
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + n])
        pos += n
        i += 1
    scanner = SecretScanner([BrokeredSecret("BOTTLE_TOKEN_0", secret)])
    released_before, findings, _ = stream_all(chunks, scanner)
    assert any(f.kind == BROKERED for f in findings)
    assert raw not in released_before
    assert raw[: len(raw) // 2] not in released_before[len(before) - 1 :] if len(before) > 0 else True


@settings(max_examples=100)
@given(st.binary(max_size=2000))
def test_scanner_never_raises_and_findings_are_inside_the_data(data: bytes) -> None:
    findings = SCANNER.scan(data, "body")
    for f in findings:
        assert 0 <= f.start < f.end <= len(data)


def test_finding_json_shape_is_stable() -> None:
    f = SCANNER.scan(FAKE["aws-access-key-id"], "url")[0]
    assert json.loads(msgspec.json.encode(f)) == {
        "kind": "aws-access-key-id",
        "location": "url",
        "start": 0,
        "end": 20,
        "encoding": "raw",
        "slot": None,
    }

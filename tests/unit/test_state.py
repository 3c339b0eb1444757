"""The per-bottle state model: paths, metadata, and the keep-or-remove decisions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bottle.core import state
from bottle.core.state import (
    BottleMetadata,
    SessionEnd,
    HOST_AUDIT_LOG,
    StateCorrupt,
    audit_dir,
    audit_log_path,
    ca_cert_path,
    ca_key_path,
    decide_launch_state,
    decide_session_end,
    decode_metadata,
    encode_metadata,
    is_secret_path,
    per_bottle_image_tag,
)
from bottle.ports.errors import BottleError

STARTED = datetime(2025, 11, 26, 19, 30, 5, 123456, tzinfo=timezone.utc)


def metadata(**changes: object) -> BottleMetadata:
    base = BottleMetadata(
        identity="implementer-k3x9q",
        agent_name="implementer",
        cwd="/home/dev/project",
        copy_cwd=False,
        started_at=STARTED,
        runtime="podman",
        manifest_sources=("/home/dev/.config/bottle/bottle.json", "/home/dev/project/bottle.json"),
    )
    return msgspec.structs.replace(base, **changes)


def test_layout_constants() -> None:
    assert (state.METADATA, state.PRESERVE_MARKER, state.DOCKERFILE) == ("metadata.json", ".preserve", "Dockerfile")
    assert (state.TRANSCRIPT_DIR, state.PROPOSALS_DIR, state.AUDIT_DIR, state.CA_DIR) == (
        "transcript", "proposals", "audit", "ca",
    )


def test_role_paths() -> None:
    assert ca_key_path("egress-proxy") == "ca/egress-proxy.key"
    assert ca_cert_path("egress-proxy") == "ca/egress-proxy.crt"
    assert audit_dir("guard") == "audit/guard"
    assert audit_log_path("guard") == "audit/guard/guard.jsonl"
    assert audit_log_path("git-gate") == "audit/git-gate/git-gate.jsonl"
    assert HOST_AUDIT_LOG == "audit/supervise.jsonl"


@given(st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True))
def test_no_sidecar_audit_directory_holds_the_host_log(role: str) -> None:
    # A sidecar mounts audit_dir(role) writable; the host's log must be outside every one.
    assert not HOST_AUDIT_LOG.startswith(audit_dir(role) + "/")
    assert audit_log_path(role).startswith(audit_dir(role) + "/")


@pytest.mark.parametrize("role", ["", "../x", "a/b", "Guard", "-x", "guard\n"])
def test_role_paths_reject_odd_roles(role: str) -> None:
    with pytest.raises(ValueError):
        ca_key_path(role)
    with pytest.raises(ValueError):
        audit_dir(role)
    with pytest.raises(ValueError):
        audit_log_path(role)


@pytest.mark.parametrize(
    ("relpath", "secret"),
    [
        (ca_key_path("guard"), True),
        ("ca/egress-proxy.key", True),
        (ca_cert_path("guard"), False),
        ("metadata.json", False),
        (audit_log_path("guard"), False),
        ("Dockerfile", False),
        ("transcript/session.jsonl", False),
        ("ca/key.crt", False),
    ],
)
def test_is_secret_path(relpath: str, secret: bool) -> None:
    assert is_secret_path(relpath) is secret


def test_metadata_round_trip() -> None:
    m = metadata()
    data = encode_metadata(m)
    assert decode_metadata(data, "/state/implementer-k3x9q/metadata.json") == m
    assert b'"started_at": "2025-11-26T19:30:05.123456Z"' in data


def test_metadata_keeps_non_utc_offsets() -> None:
    m = metadata(started_at=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert decode_metadata(encode_metadata(m), "m").started_at == m.started_at


def test_metadata_defaults_and_unknown_fields() -> None:
    raw = (
        b'{"identity": "a-00000", "agent_name": "a", "cwd": "/", "copy_cwd": true,'
        b' "started_at": "2025-01-01T00:00:00Z", "runtime": "docker", "from_the_future": 1}'
    )
    assert decode_metadata(raw, "m").manifest_sources == ()


def test_encode_refuses_what_could_not_be_read_back() -> None:
    with pytest.raises(ValueError, match="identity"):
        encode_metadata(metadata(identity="not an identity"))
    with pytest.raises(ValueError, match="timezone"):
        encode_metadata(metadata(started_at=datetime(2025, 1, 1)))


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "truncated"),
        (b"{", "truncated"),
        (b"[]", "Expected `object`"),
        (b'{"identity": "implementer-k3x9q"}', "missing required field `agent_name`"),
        (
            b'{"identity": 5, "agent_name": "a", "cwd": "/", "copy_cwd": false,'
            b' "started_at": "2025-01-01T00:00:00Z", "runtime": "docker"}',
            "$.identity",
        ),
        (
            b'{"identity": "a-00000", "agent_name": "a", "cwd": "/", "copy_cwd": false,'
            b' "started_at": "2025-01-01T00:00:00", "runtime": "docker"}',
            "$.started_at",
        ),
        (
            b'{"identity": "../etc", "agent_name": "a", "cwd": "/", "copy_cwd": false,'
            b' "started_at": "2025-01-01T00:00:00Z", "runtime": "docker"}',
            "$.identity",
        ),
    ],
)
def test_decode_errors_name_the_file_and_what_is_wrong(data: bytes, detail: str) -> None:
    with pytest.raises(StateCorrupt) as info:
        decode_metadata(data, "/state/x/metadata.json")
    err = info.value
    assert isinstance(err, BottleError)
    assert str(err).startswith("/state/x/metadata.json: ")
    assert detail in str(err)
    assert err.hint and "bottle cleanup" in err.hint


@given(st.binary(max_size=200))
def test_decode_garbage_raises_only_state_corrupt(data: bytes) -> None:
    try:
        decode_metadata(data, "m")
    except StateCorrupt:
        pass


def test_per_bottle_image_tag() -> None:
    assert per_bottle_image_tag("implementer-k3x9q") == "localhost/bottle-agent-implementer-k3x9q:latest"
    with pytest.raises(ValueError):
        per_bottle_image_tag("Implementer")


def test_session_end_keeps_preserved_state_with_a_resume_hint() -> None:
    assert decide_session_end("implementer-k3x9q", preserved=True) == SessionEnd(
        keep_state=True, resume_hint="bottle resume implementer-k3x9q"
    )


def test_session_end_removes_unpreserved_state() -> None:
    assert decide_session_end("implementer-k3x9q", preserved=False) == SessionEnd(keep_state=False, resume_hint=None)


def test_launch_clears_a_stale_preserve_marker_only() -> None:
    existing = [".preserve", "metadata.json", "Dockerfile", "transcript", "ca"]
    assert decide_launch_state(existing) == [".preserve"]
    assert decide_launch_state(iter(existing)) == [".preserve"]
    assert decide_launch_state(["metadata.json", "transcript"]) == []
    assert decide_launch_state([]) == []

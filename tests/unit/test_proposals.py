"""Supervise proposals in the core: validation, refusals of forged files, status changes, what approvals change."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle.core import proposals as P
from bottle.core.egress_policy import policy_document

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
ME = "impl-abcde"
GITHUB_TOKEN = "ghp_" + "Xy7" * 12


def filing(payload: P.Payload, pid: int = 1, reason: str = "the tests need it") -> P.Filing:
    return P.new_filing(ME, pid, reason, payload, NOW)


def raw(f: P.Filing, **changes: object) -> bytes:
    data = msgspec.to_builtins(f)
    data.update(changes)
    return msgspec.json.encode(data)


def view(payload: P.Payload, status: str = "pending", pid: int = 1) -> P.Proposal:
    f = filing(payload, pid)
    p = P.proposal_view(f, None, filing_digest=P.digest(P.encode_filing(f)))
    return msgspec.structs.replace(p, status=status)


# -- validation -----------------------------------------------------------------------


def test_a_filing_round_trips_and_normalises_the_host() -> None:
    f = filing(P.AllowHost("PyPI.org"))
    back = P.parse_filing(P.encode_filing(f), name="1.json", identity=ME)
    assert back.payload == P.AllowHost("pypi.org")
    assert back.kind == "allow-host" and back.reason == "the tests need it"


@pytest.mark.parametrize("host", ["", "*", "http://x.com", "a..b", "*.com", "x.com/path"])
def test_a_bad_host_is_refused_with_the_pattern_rule(host: str) -> None:
    with pytest.raises(P.ProposalRefused) as err:
        filing(P.AllowHost(host))
    assert "host pattern" in err.value.message or "empty" in err.value.message


def test_a_route_carrying_a_secret_instead_of_a_token_ref_is_refused() -> None:
    with pytest.raises(P.ProposalRefused) as err:
        filing(P.AddRoute("https://api.github.com", GITHUB_TOKEN))
    assert "looks like a secret" in err.value.message and "token_ref" in err.value.message
    assert GITHUB_TOKEN not in err.value.message
    with pytest.raises(P.ProposalRefused, match="user information"):
        filing(P.AddRoute("https://user:pw@api.github.com", "GITHUB_TOKEN"))
    with pytest.raises(P.ProposalRefused, match="not an environment variable name"):
        filing(P.AddRoute("https://api.github.com", "Bearer abc"))


def test_a_route_names_its_token_ref_normalised() -> None:
    f = filing(P.AddRoute("https://API.github.com/", "GITHUB_TOKEN", "Bearer"))
    assert f.payload == P.AddRoute("https://api.github.com", "env:GITHUB_TOKEN", "bearer")


def test_a_secret_in_the_reason_is_refused() -> None:
    with pytest.raises(P.ProposalRefused, match="reason contains what looks like a secret"):
        filing(P.AllowHost("pypi.org"), reason=f"my token is {GITHUB_TOKEN}")


def test_dockerfile_rules() -> None:
    ok = filing(P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"))
    assert ok.kind == "capability-change"
    big = "ARG BASE\nFROM ${BASE}\n" + "RUN true\n" * 10000
    with pytest.raises(P.ProposalRefused, match=r"is \d+ bytes; the limit is 65536"):
        filing(P.CapabilityChange(big))
    with pytest.raises(P.ProposalRefused, match="ADD or COPY"):
        filing(P.CapabilityChange("ARG BASE\nFROM ${BASE}\nCOPY ca/guard.key /k\n"))
    with pytest.raises(P.ProposalRefused, match="no FROM"):
        filing(P.CapabilityChange("RUN true\n"))
    # Anything but the bottle's own image as the one stage could pull in another image (another bottle's).
    for text in (
        "FROM debian\nRUN true\n",
        "FROM localhost/bottle-agent-other-zzzzz\n",
        "ARG BASE\nFROM ${BASE} AS b\nRUN true\nFROM ${BASE}\nCOPY --from=b /x /x\n",
        "ARG BASE\nFROM ${BASE}\nCOPY --from=localhost/other:latest /workspace /w\n",
    ):
        with pytest.raises(P.ProposalRefused, match="exactly one stage|ADD or COPY"):
            filing(P.CapabilityChange(text))
    with pytest.raises(P.ProposalRefused, match="RUN flag"):
        filing(P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN --mount=type=bind,from=other,target=/o cat /o/x\n"))
    # The parser joins a line ending in a backslash to the next (skipping comments in between):
    # the rules apply to instructions as the builder reads them, not to physical lines.
    head = "ARG BASE\nFROM ${BASE}\n"
    for text, why in (
        (head + "FR\\\nOM localhost/bottle-agent-other-zzzzz\n", "exactly one stage"),
        (head + "CO\\\nPY --from=localhost/other:latest / /x\n", "ADD or COPY"),
        (head + "AD\\\n# a comment the parser skips\nD https://example.com/x /x\n", "ADD or COPY"),
        (head + "RUN \\\n  --mount=type=bind,from=other,target=/o cat /o/x\n", "RUN flag"),
        (head + "RUN --network=host curl http://169.254.169.254/\n", "RUN flag"),
        (head + "run --network=host true\n", "RUN flag"),
        (head + "ONBUILD COPY --from=other / /x\n", "ONBUILD"),
        (head + "RUN <<EOF\ntrue\nEOF\n", "heredoc"),
        ("\ufeff# syntax=docker/dockerfile:1\n" + head, "control character"),
        ("ARG BASE\nfrom localhost/other\n", "exactly one stage"),
        ("ARG BASE\nFROM --platform=linux/amd64 ${BASE}\n", "exactly one stage"),
    ):
        with pytest.raises(P.ProposalRefused, match=why):
            filing(P.CapabilityChange(text))
    continued = head + "RUN apt-get update \\\n # why: jq for the tests\n && apt-get install -y jq\n"
    assert filing(P.CapabilityChange(continued)).kind == "capability-change"
    assert P.dockerfile_instructions(continued)[-1] == "RUN apt-get update  && apt-get install -y jq"
    for directive in ("# syntax=docker/dockerfile:1", "# escape=`"):
        with pytest.raises(P.ProposalRefused, match="parser directive"):
            filing(P.CapabilityChange(f"{directive}\nARG BASE\nFROM ${{BASE}}\n"))
    assert filing(P.CapabilityChange("ARG BASE\nFROM $BASE AS tools\nRUN true\n")).kind == "capability-change"


def test_text_a_person_reads_carries_no_control_characters() -> None:
    """An escape sequence in a reason or Dockerfile could rewrite what the operator's terminal shows."""
    for evil in ("\x1b[2J\x1b[Happroved", "ok\rrm -rf", "\x1b]52;c;Zm9v\x07", "a\u202eb", "\x9b31m", "nul\x00"):
        with pytest.raises(P.ProposalRefused, match="control character"):
            filing(P.AllowHost("pypi.org"), reason=evil)
        with pytest.raises(P.ProposalRefused, match="control character"):
            filing(P.CapabilityChange(f"ARG BASE\nFROM ${{BASE}}\nRUN echo '{evil}'\n"))
    with pytest.raises(P.ProposalRefused, match="control character"):
        filing(P.AddRoute("https://api.example.com", "env:TOKEN", "bearer\x1b[8m"))
    assert filing(P.AllowHost("pypi.org"), reason="line one\n\tline two").reason == "line one\n\tline two"


def test_payload_from_request_refuses_host_fields_and_unknown_kinds() -> None:
    with pytest.raises(P.ProposalRefused, match="only the host decides"):
        P.payload_from_request({"kind": "allow-host", "host": "a.com", "reason": "r", "status": "approved"})
    with pytest.raises(P.ProposalRefused, match="kind must be one of"):
        P.payload_from_request({"kind": "sudo", "reason": "r"})
    with pytest.raises(P.ProposalRefused, match="malformed"):
        P.payload_from_request({"kind": "allow-host", "reason": "r", "hostname": "a.com"})
    with pytest.raises(P.ProposalRefused, match="needs a reason"):
        P.payload_from_request({"kind": "allow-host", "host": "a.com"})
    assert P.payload_from_request({"kind": "allow-host", "host": "a.com", "reason": " r "}) == ("r", P.AllowHost("a.com"))


# -- tampering --------------------------------------------------------------------------


def test_a_file_claiming_a_status_is_forged() -> None:
    data = raw(filing(P.AllowHost("evil.example")), status="approved", decided_by="agent")
    with pytest.raises(P.ProposalRefused) as err:
        P.parse_filing(data, name="1.json", identity=ME)
    assert "carries status 'approved'" in err.value.message and "forged" in err.value.message


@pytest.mark.parametrize("name", ["0.json", "10000.json", "-1.json", "01.json", "x.json", "1.json.tmp"])
def test_malformed_or_out_of_range_file_names_are_refused(name: str) -> None:
    with pytest.raises(P.ProposalRefused) as err:
        P.parse_filing(P.encode_filing(filing(P.AllowHost("a.com"))), name=name, identity=ME)
    assert "out of range" in err.value.message or "not a proposal file name" in err.value.message


def test_an_id_out_of_range_inside_the_file_or_unlike_its_name_is_refused() -> None:
    f = filing(P.AllowHost("a.com"))
    with pytest.raises(P.ProposalRefused, match="out of range"):
        P.parse_filing(raw(f, id=123456), name="1.json", identity=ME)
    with pytest.raises(P.ProposalRefused, match="claims id 2, its name says 1"):
        P.parse_filing(raw(f, id=2), name="1.json", identity=ME)


def test_another_bottles_identity_is_refused() -> None:
    f = P.new_filing("other-zzzzz", 1, "r", P.AllowHost("a.com"), NOW)
    with pytest.raises(P.ProposalRefused, match="for bottle 'other-zzzzz', but it is in 'impl-abcde'"):
        P.parse_filing(P.encode_filing(f), name="1.json", identity=ME)


def test_an_oversized_dockerfile_written_straight_to_the_queue_is_refused() -> None:
    f = filing(P.CapabilityChange("ARG BASE\nFROM ${BASE}\n"))
    data = raw(f, payload={"kind": "capability-change", "dockerfile": "ARG BASE\nFROM ${BASE}\n" + "#" * 70000})
    with pytest.raises(P.ProposalRefused, match="the limit is 65536"):
        P.parse_filing(data, name="1.json", identity=ME)
    with pytest.raises(P.ProposalRefused, match="a proposal is at most"):
        P.parse_filing(data + b" " * P.MAX_FILING_BYTES, name="1.json", identity=ME)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.dictionaries(st.sampled_from(["id", "identity", "payload", "reason", "version", "filed_at", "x"]),
                                                 st.integers() | st.text(max_size=20) | st.none(), max_size=6).map(msgspec.json.encode))
def test_anything_in_the_queue_is_either_a_valid_filing_or_refused(data: bytes) -> None:
    try:
        f = P.parse_filing(data, name="1.json", identity=ME)
    except P.ProposalRefused as exc:
        assert exc.message
    else:
        assert f.identity == ME and f.id == 1


# -- status changes -----------------------------------------------------------------------


def test_only_allowed_transitions_and_every_decision_names_who() -> None:
    p = view(P.AllowHost("a.com"))
    d = P.decide(p, "approved", decided_by="ann", now=NOW, note="fine")
    assert (d.status, d.decided_by, d.note) == ("approved", "ann", "fine")
    approved = P.proposal_view(filing(P.AllowHost("a.com")), d)
    applied = P.decide(approved, "applied", decided_by="ann", now=NOW + timedelta(seconds=1), previous=d)
    assert applied.applied_at and applied.decided_by == "ann"
    done = P.proposal_view(filing(P.AllowHost("a.com")), applied)
    for status in ("approved", "rejected", "pending", "failed"):
        with pytest.raises(P.ProposalRefused, match="cannot become"):
            P.decide(done, status, decided_by="ann", now=NOW)
    with pytest.raises(P.ProposalRefused, match="who decided"):
        P.decide(p, "rejected", decided_by=" ", now=NOW)
    with pytest.raises(P.ProposalRefused, match="cannot become applied"):
        P.decide(p, "applied", decided_by="ann", now=NOW)


def test_grants_parse_and_timed_grants_only_for_hosts() -> None:
    assert P.parse_grant("once") == P.Grant("single-use")
    assert P.parse_grant("30m") == P.Grant("duration", 1800)
    assert P.parse_grant("lifetime") == P.Grant("lifetime")
    for bad in ("forever", "0s", "31d", "5x"):
        with pytest.raises(P.ProposalRefused):
            P.parse_grant(bad)
    cap = view(P.CapabilityChange("ARG BASE\nFROM ${BASE}\n"))
    with pytest.raises(P.ProposalRefused, match="allow-host proposals only"):
        P.decide(cap, "approved", decided_by="a", now=NOW, grant=P.Grant("single-use"))


def test_a_duration_grant_expires_and_a_single_use_grant_is_spent() -> None:
    timed = P.HostGrant(1, "a.com", "duration", "2026-11-26T12:30:00.000Z")
    once = P.HostGrant(2, "b.com", "single-use")
    doc = P.GrantsDocument(grants=(timed, once))
    assert P.live_grants(doc, NOW) == (timed, once)
    assert P.live_grants(doc, NOW + timedelta(minutes=30)) == (once,)
    assert P.live_grants(doc, NOW, used=[2]) == (timed,)
    assert P.decode_grants(P.encode_grants(doc)) == doc


# -- effects --------------------------------------------------------------------------


POLICY = policy_document(["pypi.org"], identity=ME, agent="impl")


def _approve(payload: P.Payload, grant: P.Grant | None = None) -> tuple[P.Proposal, P.Decision]:
    p = view(payload)
    d = P.decide(p, "approved", decided_by="ann", now=NOW, grant=grant)
    return P.proposal_view(filing(payload), d), d


def test_a_lifetime_host_joins_the_policy_document() -> None:
    p, d = _approve(P.AllowHost("api.example.com"))
    effects = P.approval_effects(p, d, POLICY, P.GrantsDocument(), now=NOW)
    assert effects.policy is not None and effects.policy.allow == ("pypi.org", "api.example.com")
    assert not effects.restart and "for the bottle's lifetime" in effects.change


def test_timed_and_single_use_hosts_become_grants_not_policy() -> None:
    p, d = _approve(P.AllowHost("api.example.com"), P.Grant("duration", 600))
    effects = P.approval_effects(p, d, POLICY, P.GrantsDocument(), now=NOW)
    assert effects.policy is None and effects.grants is not None
    assert effects.grants.grants == (P.HostGrant(1, "api.example.com", "duration", "2026-11-26T12:10:00.000Z"),)
    p, d = _approve(P.AllowHost("x.example.com"), P.Grant("single-use"))
    stale = P.GrantsDocument(grants=(P.HostGrant(9, "old.com", "duration", "2026-11-26T11:00:00.000Z"),))
    effects = P.approval_effects(p, d, POLICY, stale, now=NOW)
    assert effects.grants == P.GrantsDocument(grants=(P.HostGrant(1, "x.example.com", "single-use"),))


def test_routes_and_capability_changes_need_a_resume() -> None:
    p, d = _approve(P.AddRoute("https://api.github.com", "GITHUB_TOKEN"))
    effects = P.approval_effects(p, d, POLICY, P.GrantsDocument(), now=NOW)
    assert effects.restart and effects.resume_hint == f"bottle resume {ME}"
    assert effects.policy is not None and [r.upstream for r in effects.policy.routes] == ["https://api.github.com"]
    assert "api.github.com" in effects.policy.allow
    p, d = _approve(P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n"))
    effects = P.approval_effects(p, d, POLICY, P.GrantsDocument(), now=NOW)
    assert effects.restart and effects.dockerfile and "jq" in effects.dockerfile and effects.policy is None


def test_previews_show_the_allowlist_delta_and_the_dockerfile_diff() -> None:
    text = P.change_preview(view(P.AllowHost("api.example.com")), allow=("pypi.org",))
    assert text.splitlines() == ["  pypi.org", "+ api.example.com"]
    diff = P.change_preview(view(P.CapabilityChange("ARG BASE\nFROM ${BASE}\nRUN apt-get install -y jq\n")), dockerfile="ARG BASE\nFROM ${BASE}\n")
    assert "+RUN apt-get install -y jq" in diff and "-FROM ${BASE}" not in diff


def test_the_guard_confirmation_names_both_digests() -> None:
    line = {"event": "policy", "rule": "policy-loaded", "reason": P.policy_loaded_reason(P.digest(b"a"), P.digest(None))}
    assert P.confirms(line, P.digest(b"a"), P.digest(None))
    assert not P.confirms(line, P.digest(b"b"), P.digest(None))


def test_applied_changes_for_a_resume() -> None:
    host, d = _approve(P.AllowHost("a.com"))
    applied = msgspec.structs.replace(host, status="applied")
    timed = msgspec.structs.replace(host, status="applied", grant=P.Grant("single-use"), payload=P.AllowHost("b.com"))
    route = msgspec.structs.replace(view(P.AddRoute("https://api.github.com", "GITHUB_TOKEN")), status="applied")
    hosts, routes = P.approved_changes([applied, timed, route, view(P.AllowHost("c.com"))])
    assert hosts == ("a.com",) and [r.upstream for r in routes] == ["https://api.github.com"]


def test_the_mcp_server_is_registered_for_claude_code_keeping_the_rest() -> None:
    import json

    fresh = json.loads(P.claude_code_mcp_config(None, "http://supervise:8080"))
    assert fresh == {"mcpServers": {"bottle-supervise": {"type": "http", "url": "http://supervise:8080/mcp"}}}
    kept = json.loads(P.claude_code_mcp_config(b'{"numStartups": 4, "mcpServers": {"x": {"type": "stdio"}}}', "http://supervise:8080/"))
    assert kept["numStartups"] == 4 and set(kept["mcpServers"]) == {"x", "bottle-supervise"}
    with pytest.raises(ValueError):
        P.claude_code_mcp_config(b"[1]", "http://supervise:8080")
    # Already registered (a resume): the agent's file stays byte for byte, formatting and all.
    theirs = '{\n    "mcpServers": {"bottle-supervise": {"url": "http://supervise:8080/mcp", "type": "http"}},\n    "name": "caf\u00e9"\n}'.encode()
    assert P.claude_code_mcp_config(theirs, "http://supervise:8080") == theirs


def test_a_decision_without_its_own_copy_of_the_filing_is_not_used() -> None:
    legacy = b'{"version": 1, "id": 1, "identity": "impl-abcde", "status": "applied", "decided_by": "op", "decided_at": "2026-11-26T12:00:00Z"}'
    with pytest.raises(P.ProposalRefused, match="keeps no copy of what was decided; it is not carried over"):
        P.parse_decision(legacy, proposal_id=1, identity=ME)

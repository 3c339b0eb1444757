"""Supervise proposals: what an agent may ask for, and what a person's decision changes.

An agent in a bottle with ``bottle.supervise`` files *proposals* through the
supervise sidecar:

    allow-host          reach one more host (egress allowlist)
    add-route           a new egress-proxy route naming a ``token_ref`` the
                        operator holds (never a secret)
    capability-change   a new Dockerfile for the agent's image

Two kinds of file, in two directories of the bottle's state, keep the
sidecar from ever deciding anything:

    proposals/<n>.json   a ``Filing``, written by the sidecar (its only
                         writable mount). It has *no* status: a file there
                         that carries one (or any unknown field) is forged
                         and refused.
    decisions/<n>.json   a ``Decision``, written by the host only (mounted
                         read-only into the sidecar, so the agent can wait).

The host reads every filing through ``parse_filing``, which refuses, with a
reason a person can act on: a malformed or out-of-range id, a file name that
does not match its id, another bottle's identity, an oversized Dockerfile, a
route carrying a secret instead of a ``token_ref``, anything a secret scanner
recognises. Status changes only host-side (``decide``), along
``TRANSITIONS``.

What an approval changes is decided here too (``approval_effects``): the new
policy document (a lifetime host grant), the new grants document (single-use
or timed host grants, enforced by the guard itself so a grant ends even when
no host process runs), the per-bottle Dockerfile (capability change), the
audit events naming who decided. Adapters apply them. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from bottle.core.audit import utc_timestamp
from bottle.core.egress_policy import PolicyDocument, policy_document
from bottle.core.identity import is_identity
from bottle.core.routing import RouteTable, build_route_table, validate_host_pattern
from bottle.core.secretscan import SecretScanner
from bottle.core.tokenref import parse_token_ref
from bottle.ports.errors import InputError

__all__ = [
    "BUILD_NETWORK_MARKER",
    "DECISIONS_DIR",
    "FILINGS_DIR",
    "PINS_DIR",
    "GRANTS_FILE",
    "KINDS",
    "MAX_DECISION_BYTES",
    "MAX_DOCKERFILE_BYTES",
    "MAX_FILING_BYTES",
    "MAX_PROPOSAL_ID",
    "STATUSES",
    "AddRoute",
    "AllowHost",
    "ApprovalEffects",
    "CapabilityChange",
    "Decision",
    "Filing",
    "Grant",
    "GrantsDocument",
    "HostGrant",
    "Proposal",
    "ProposalEvent",
    "ProposalRefused",
    "RULE_GRANT_USED",
    "grant_route",
    "spent_grants",
    "SUPERVISE_SETTINGS",
    "SuperviseSettings",
    "check_offered",
    "is_offered",
    "approval_effects",
    "decide",
    "filing_name",
    "dockerfile_instructions",
    "filing_of",
    "live_grants",
    "new_filing",
    "parse_decision",
    "parse_filing",
    "parse_grant",
    "policy_loaded_reason",
    "proposal_view",
]

FILINGS_DIR = "proposals"
DECISIONS_DIR = "decisions"
# Host-only copies of filings as the host first read them (never mounted):
# what a person saw is what gets decided, even if the sidecar rewrites the file.
PINS_DIR = "pinned"
# Beside the per-bottle Dockerfile when the approver let its build use the
# network; absent, a resume builds it with no network at all.
BUILD_NETWORK_MARKER = "Dockerfile.network"
# Next to the policy file the guard reads (state ``policy/``).
GRANTS_FILE = "grants.json"

FORMAT_VERSION = 1
MAX_PROPOSAL_ID = 9999
MAX_DOCKERFILE_BYTES = 64 * 1024
MAX_REASON_CHARS = 4000
MAX_NOTE_CHARS = 2000
# A filing is read only up to this size; anything larger is refused unread.
MAX_FILING_BYTES = MAX_DOCKERFILE_BYTES + 3 * MAX_REASON_CHARS + 4096
# A decision holds its own copy of the filing, re-encoded, plus the host's fields.
MAX_DECISION_BYTES = 2 * MAX_FILING_BYTES
MAX_GRANT_SECONDS = 30 * 24 * 3600

KINDS = ("allow-host", "add-route", "capability-change")
STATUSES = ("pending", "approved", "rejected", "applied", "failed")
FINAL_STATUSES = frozenset({"rejected", "applied", "failed"})
# Every status change there is; the host makes them all.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"approved", "rejected"}),
    "approved": frozenset({"applied", "failed"}),
    "rejected": frozenset(),
    "applied": frozenset(),
    "failed": frozenset(),
}

_FILE_NAME = re.compile(r"^(0|[1-9][0-9]*)\.json$")
# Fields only a host decision has: a filing that carries one was forged.
_HOST_FIELDS = ("status", "note", "decided_by", "decided_at", "grant", "applied_at", "expires_at")
_FROM = re.compile(r"^FROM\s+(\S+)(\s+AS\s+\S+)?\s*$", re.IGNORECASE)
_BASE_REF = ("${BASE}", "$BASE")
# ``# syntax=`` picks a BuildKit frontend image and ``# escape=`` changes how
# every later line parses: neither belongs in a reviewed one-stage Dockerfile.
_DIRECTIVE = re.compile(r"^#\s*(syntax|escape|check)\s*=", re.IGNORECASE)
# What a capability change may use. Not ADD/COPY (its context is empty, and
# ``--from`` or a URL would bring in what nobody reviewed), not ONBUILD, and
# nothing the engine might add later: an unknown instruction is refused.
_INSTRUCTIONS = frozenset({
    "ARG", "FROM", "RUN", "ENV", "LABEL", "USER", "WORKDIR", "CMD", "ENTRYPOINT", "SHELL",
    "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "VOLUME",
})
# C0 and C1 controls (but tab and newline), DEL, and the bidi overrides and
# isolates that make text read differently from what it is.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")
_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Kind = Literal["allow-host", "add-route", "capability-change"]
Status = Literal["pending", "approved", "rejected", "applied", "failed"]


class ProposalRefused(InputError):
    """A proposal (or a decision on one) that cannot be accepted; the message says why."""


def _refused(reason: str, hint: str | None = None) -> ProposalRefused:
    return ProposalRefused(reason, hint=hint or "nothing was applied; the proposal stays as it was")


# -- payloads -------------------------------------------------------------------


class AllowHost(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="allow-host", tag_field="kind"):
    """Reach ``host`` (a host pattern: ``api.example.com``, ``*.example.com``, ``host:8443``)."""

    host: str

    def describe(self) -> str:
        return f"allow {self.host}"


class AddRoute(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="add-route", tag_field="kind"):
    """A route to ``upstream`` whose credential the operator supplies from ``token_ref``."""

    upstream: str
    token_ref: str
    auth_scheme: str = "bearer"

    def describe(self) -> str:
        return f"route {self.upstream} ({self.auth_scheme}, secret from {self.token_ref})"


class CapabilityChange(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="capability-change", tag_field="kind"
):
    """A new Dockerfile for the agent's image (built on the current one, passed as ``BASE``)."""

    dockerfile: str

    def describe(self) -> str:
        lines = len(self.dockerfile.splitlines())
        return f"new Dockerfile ({lines} lines, {len(self.dockerfile.encode())} bytes)"


Payload = AllowHost | AddRoute | CapabilityChange


# -- grants ---------------------------------------------------------------------


class Grant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long an approved host stays allowed: the bottle's ``lifetime``, ``single-use`` or ``duration``."""

    mode: Literal["lifetime", "single-use", "duration"] = "lifetime"
    seconds: int = 0

    def describe(self) -> str:
        if self.mode == "duration":
            return f"for {format_duration(self.seconds)}"
        return "for one request" if self.mode == "single-use" else "for the bottle's lifetime"


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_grant(text: str) -> Grant:
    """``lifetime``, ``once`` (or ``single-use``), or a duration: ``90s``, ``30m``, ``2h``, ``1d``.

    Raises ``ProposalRefused`` saying what is expected.
    """
    value = (text or "").strip().lower()
    if value in ("", "lifetime"):
        return Grant("lifetime")
    if value in ("once", "single-use"):
        return Grant("single-use")
    match = _DURATION.match(value)
    if match is None:
        raise ProposalRefused(
            f"{text!r} is not a grant", hint="use lifetime, once, or a duration such as 90s, 30m, 2h or 1d"
        )
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 0 < seconds <= MAX_GRANT_SECONDS:
        raise ProposalRefused(
            f"a grant of {text!r} is out of range", hint="a duration is between 1s and 30d; or use lifetime"
        )
    return Grant("duration", seconds)


class HostGrant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A temporary host grant the guard enforces: ``single-use`` or until ``expires_at`` (RFC 3339)."""

    proposal: int
    pattern: str
    mode: Literal["single-use", "duration"]
    expires_at: str = ""


class GrantsDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``policy/grants.json``: temporary host grants, beside the policy file the guard reads."""

    version: int = FORMAT_VERSION
    grants: tuple[HostGrant, ...] = ()


def encode_grants(doc: GrantsDocument) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def decode_grants(data: bytes) -> GrantsDocument:
    """Parse a grants file; ``ValueError`` says what is wrong."""
    try:
        doc = msgspec.json.decode(data, type=GrantsDocument)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the grants file is not valid: {exc}") from None
    if doc.version != FORMAT_VERSION:
        raise ValueError(f"the grants file has version {doc.version}; this guard reads version {FORMAT_VERSION}")
    for grant in doc.grants:
        validate_host_pattern(grant.pattern)
        if grant.mode == "duration":
            _parse_time(grant.expires_at)
    return doc


def _parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value


def grant_live(grant: HostGrant, now: datetime, used: Iterable[int] = ()) -> bool:
    """Whether ``grant`` still admits requests at ``now`` (``used``: single-use grants already spent)."""
    if grant.mode == "single-use":
        return grant.proposal not in set(used)
    return now < _parse_time(grant.expires_at)


# The guard's audit rule for spending a single-use grant; its route field names the proposal.
RULE_GRANT_USED = "grant-used"
_GRANT_ROUTE_PREFIX = "proposal:"


def grant_route(proposal_id: int) -> str:
    """The ``route`` field of the guard's audit lines about proposal ``proposal_id``'s grant."""
    return f"{_GRANT_ROUTE_PREFIX}{proposal_id}"


def spent_grants(lines: Iterable[bytes]) -> set[int]:
    """Proposal ids of the ``grant-used`` lines among ``lines`` (the guard's JSONL audit lines).

    A line that is not JSON (a write cut short by a crash) or not a
    ``grant-used`` record is skipped.
    """
    spent: set[int] = set()
    for line in lines:
        if RULE_GRANT_USED.encode() not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("rule") != RULE_GRANT_USED:
            continue
        route = record.get("route")
        if isinstance(route, str) and route.startswith(_GRANT_ROUTE_PREFIX):
            number = route[len(_GRANT_ROUTE_PREFIX):]
            if number.isascii() and number.isdigit():
                spent.add(int(number))
    return spent


def live_grants(doc: GrantsDocument, now: datetime, used: Iterable[int] = ()) -> tuple[HostGrant, ...]:
    """The grants of ``doc`` still in force at ``now``."""
    spent = set(used)
    return tuple(g for g in doc.grants if grant_live(g, now, spent))


def policy_with_grants(doc: PolicyDocument, grants: Sequence[HostGrant]) -> PolicyDocument:
    """``doc`` with the patterns of ``grants`` appended to its allowlist (after the permanent ones)."""
    extra = [g.pattern for g in grants if g.pattern not in doc.allow]
    if not extra:
        return doc
    return msgspec.structs.replace(doc, allow=tuple(dict.fromkeys([*doc.allow, *extra])))


# -- digests the guard confirms -------------------------------------------------------


def digest(data: bytes | None) -> str:
    """``sha256:<hex>`` of a policy or grants file's bytes (``None``: the file is absent)."""
    return "sha256:" + hashlib.sha256(data or b"").hexdigest()


def policy_loaded_reason(policy_digest: str, grants_digest: str) -> str:
    """The reason of the guard's ``policy-loaded`` audit line, naming what it loaded."""
    return f"loaded policy {policy_digest} grants {grants_digest}"


def confirms(record: dict[str, object], policy_digest: str, grants_digest: str) -> bool:
    """Whether a guard audit line (decoded JSON) confirms it loaded exactly these files."""
    return (
        record.get("event") == "policy"
        and record.get("rule") == "policy-loaded"
        and record.get("reason") == policy_loaded_reason(policy_digest, grants_digest)
    )


# -- what the operator offers to proposals -----------------------------------------

# Host-only, beside the bottle's metadata; written at every launch from the manifest.
SUPERVISE_SETTINGS = "supervise.json"


class SuperviseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the manifest lets proposals ask for: the ``token_refs`` an add-route may name."""

    version: int = FORMAT_VERSION
    token_refs: tuple[str, ...] = ()


def supervise_settings(token_refs: Iterable[str]) -> SuperviseSettings:
    """Settings offering ``token_refs`` (canonical ``env:NAME`` / ``file:PATH``, duplicates dropped)."""
    return SuperviseSettings(token_refs=tuple(dict.fromkeys(str(parse_token_ref(r)) for r in token_refs)))


def encode_settings(settings: SuperviseSettings) -> bytes:
    return msgspec.json.format(msgspec.json.encode(settings), indent=2) + b"\n"


def decode_settings(data: bytes | None) -> SuperviseSettings:
    """The settings file's content (absent: nothing offered); ``ValueError`` if it is not valid."""
    if data is None:
        return SuperviseSettings()
    try:
        return msgspec.json.decode(data, type=SuperviseSettings)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the supervise settings file is not valid: {exc}") from None


def is_offered(token_ref: str, settings: SuperviseSettings) -> bool:
    """Whether ``settings`` offers ``token_ref`` (spelled any way ``parse_token_ref`` reads: ``X`` is ``env:X``)."""
    return str(parse_token_ref(token_ref)) in settings.token_refs


def check_offered(proposal: Proposal, settings: SuperviseSettings) -> None:
    """Refuse an add-route naming a credential the manifest does not offer to proposals.

    Without this an agent could ask for any host variable or file (an SSH
    key, a cloud credential) to be sent to an upstream of its choosing, and
    one careless approval would send it.
    """
    payload = proposal.payload
    if not isinstance(payload, AddRoute):
        return
    ref = str(parse_token_ref(payload.token_ref))
    if not is_offered(ref, settings):
        offered = ", ".join(settings.token_refs) or "none"
        raise _refused(
            f"proposal {proposal.ref} names the credential {ref}, which this bottle's manifest does not offer "
            f"to proposals (offered: {offered})",
            hint="reject it; or add the token_ref to bottle.supervise_token_refs in the manifest and resume the bottle",
        )


# -- files ----------------------------------------------------------------------


class Filing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A proposal as the bottle files it: no status, no decision."""

    version: int
    id: int
    identity: str
    reason: str
    payload: Payload
    filed_at: str

    @property
    def kind(self) -> str:
        return _kind(self.payload)


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The host's record of a proposal's fate. Only the host writes these.

    ``filing`` is the proposal as the person decided it and ``filing_digest``
    the digest of its bytes: what is applied, listed and resumed comes from
    here, never again from the sidecar's file. ``build_network`` says the
    approver let a capability change's build use the network.
    """

    version: int
    id: int
    identity: str
    status: Status
    decided_by: str
    decided_at: str
    filing: Filing
    filing_digest: str
    note: str = ""
    grant: Grant | None = None
    expires_at: str = ""
    applied_at: str = ""
    error: str = ""
    policy_digest: str = ""
    resume_hint: str = ""
    build_network: bool = False


class Proposal(msgspec.Struct, frozen=True, omit_defaults=True):
    """One proposal as people see it: the filing and, once the host decided, its decision."""

    id: int
    identity: str
    kind: str
    reason: str
    payload: Payload
    status: str
    filed_at: str
    note: str = ""
    decided_by: str = ""
    decided_at: str = ""
    applied_at: str = ""
    grant: Grant | None = None
    expires_at: str = ""
    error: str = ""
    resume_hint: str = ""
    build_network: bool = False
    # sha256 of the filing's bytes as the host pinned them; a decision records it.
    filing_digest: str = ""

    @property
    def ref(self) -> str:
        """``<identity>/<id>``: how the CLI names it."""
        return f"{self.identity}/{self.id}"

    def describe(self) -> str:
        return self.payload.describe()


_KIND_OF: dict[type, str] = {AllowHost: "allow-host", AddRoute: "add-route", CapabilityChange: "capability-change"}


def _kind(payload: Payload) -> str:
    return _KIND_OF[type(payload)]


def filing_name(proposal_id: int) -> str:
    """``<id>.json``: the file name of proposal ``proposal_id``."""
    _check_id(proposal_id)
    return f"{proposal_id}.json"


def _check_id(proposal_id: object) -> int:
    if not isinstance(proposal_id, int) or isinstance(proposal_id, bool):
        raise _refused(f"proposal id {proposal_id!r} is not a number")
    if not 1 <= proposal_id <= MAX_PROPOSAL_ID:
        raise _refused(f"proposal id {proposal_id} is out of range (1..{MAX_PROPOSAL_ID})")
    return proposal_id


def id_from_name(name: str) -> int:
    """The id a filing's file name claims; ``ProposalRefused`` for a malformed or out-of-range one."""
    match = _FILE_NAME.match(name)
    if match is None:
        raise _refused(f"{name!r} is not a proposal file name (<id>.json)")
    return _check_id(int(match.group(1)))


# -- validation ------------------------------------------------------------------

_SCANNER = SecretScanner()


def _no_secret(text: str, where: str) -> None:
    findings = _SCANNER.scan(text, where)
    if findings:
        kinds = ", ".join(sorted({f.kind for f in findings}))
        raise _refused(
            f"the {where} contains what looks like a secret ({kinds}); a proposal never carries one",
            hint="name the credential by token_ref (an environment variable or file on the host) instead",
        )


def validate_payload(payload: Payload) -> Payload:
    """``payload`` in canonical form, or ``ProposalRefused`` saying what is wrong."""
    if isinstance(payload, AllowHost):
        try:
            host = validate_host_pattern(payload.host)
        except ValueError as exc:
            raise _refused(str(exc), hint="propose one host, e.g. 'api.example.com' or '*.example.com'") from None
        _no_secret(host, "host")
        return AllowHost(host)
    if isinstance(payload, AddRoute):
        for text, where in ((payload.upstream, "upstream"), (payload.token_ref, "token_ref"), (payload.auth_scheme, "auth_scheme")):
            _check_text(text, where)
        _no_secret(payload.upstream, "upstream")
        _no_secret(payload.token_ref, "token_ref")
        try:
            parse_token_ref(payload.token_ref)
            table = build_route_table([payload])
        except ValueError as exc:
            raise _refused(
                f"the route is not valid: {exc}",
                hint="a route names its credential by token_ref (e.g. GITHUB_TOKEN or file:~/.tokens/x), never the value",
            ) from None
        route = table.routes[0]
        return AddRoute(route.upstream, route.token_ref, route.auth_scheme)
    if isinstance(payload, CapabilityChange):
        size = len(payload.dockerfile.encode("utf-8"))
        if size > MAX_DOCKERFILE_BYTES:
            raise _refused(
                f"the proposed Dockerfile is {size} bytes; the limit is {MAX_DOCKERFILE_BYTES}",
                hint="propose only the lines the image needs (RUN apt-get install ...)",
            )
        if not payload.dockerfile.strip():
            raise _refused("the proposed Dockerfile is empty")
        _check_text(payload.dockerfile, "Dockerfile")
        _check_dockerfile(payload.dockerfile)
        _no_secret(payload.dockerfile, "Dockerfile")
        return payload
    raise _refused(f"unknown proposal kind {type(payload).__name__}")  # pragma: no cover - the union is closed


def _check_text(text: str, where: str) -> None:
    """Refuse control characters: a person reads this text in a terminal, where they could hide or fake lines."""
    bad = _UNSAFE_CHARS.search(text)
    if bad is not None:
        raise _refused(
            f"the {where} contains the control character U+{ord(bad.group()):04X}; a proposal is plain text",
            hint="use only printable characters, newlines and tabs",
        )


def dockerfile_instructions(text: str) -> list[str]:
    """The instructions of ``text`` as the Dockerfile parser reads them: one string each.

    Lines ending in ``\\`` continue on the next line, and comment and blank
    lines inside a continuation are skipped, as the parser does; checking
    physical lines instead would let ``FR\\`` + ``OM other`` through.
    """
    instructions: list[str] = []
    current: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        body = line.rstrip()
        continued = body.endswith("\\")
        if continued:
            body = body[:-1]
        current = body.lstrip() if current is None else current + body
        if not continued:
            instructions.append(current)
            current = None
    if current is not None:
        instructions.append(current)
    return instructions


def _check_dockerfile(text: str) -> None:
    """One stage, ``FROM ${BASE}``, plain instructions: what the person reviews is all the image gets.

    The build context holds only the Dockerfile, so ADD and COPY have nothing
    legitimate to copy; ``COPY --from``, ``RUN --mount`` and any other FROM
    would pull in another image (another bottle's, say), ``ADD <url>`` would
    fetch past a build without network, ``RUN --network`` would pick its own.
    Parser directives and heredocs would change how the reviewed text is read.
    """
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _DIRECTIVE.match(first.strip()):
        raise _refused(
            "the proposed Dockerfile starts with a parser directive (# syntax= or # escape=)",
            hint="remove it; the image is built with the engine's own Dockerfile parser",
        )
    instructions = dockerfile_instructions(text)
    froms = []
    for instruction in instructions:
        word, _, rest = instruction.partition(" ")
        keyword = word.upper()
        if keyword in ("ADD", "COPY"):
            raise _refused(
                "the proposed Dockerfile uses ADD or COPY; its build context holds nothing but the Dockerfile",
                hint="install what is needed with RUN (the approver decides whether the build may use the network)",
            )
        if keyword not in _INSTRUCTIONS:
            raise _refused(
                f"the proposed Dockerfile uses {word[:20]!r}; a capability change may use only "
                + ", ".join(sorted(_INSTRUCTIONS)),
                hint="express the change with RUN lines",
            )
        if keyword == "FROM":
            froms.append(instruction)
        if keyword == "RUN" and rest.lstrip().startswith("--"):
            raise _refused(
                "the proposed Dockerfile uses a RUN flag (--mount, --network, --security)",
                hint="use plain RUN lines",
            )
        if "<<" in rest and keyword == "RUN":
            raise _refused("the proposed Dockerfile uses a heredoc", hint="use plain RUN lines")
    if not froms:
        raise _refused("the proposed Dockerfile has no FROM line", hint="start it with: ARG BASE / FROM ${BASE}")
    match = _FROM.match(froms[0])
    if len(froms) > 1 or match is None or match.group(1) not in _BASE_REF:
        raise _refused(
            "the proposed Dockerfile must have exactly one stage, FROM ${BASE} (the bottle's current image)",
            hint="start it with: ARG BASE / FROM ${BASE}, and add RUN lines",
        )


def _check_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise _refused("a proposal needs a reason", hint="say why the agent needs this, in a sentence")
    if len(reason) > MAX_REASON_CHARS:
        raise _refused(f"the reason is {len(reason)} characters; the limit is {MAX_REASON_CHARS}")
    _check_text(reason, "reason")
    _no_secret(reason, "reason")
    return reason.strip()


def new_filing(identity: str, proposal_id: int, reason: str, payload: Payload, now: datetime) -> Filing:
    """The filing the sidecar writes for a new proposal (validated as the host will)."""
    if not is_identity(identity):
        raise _refused(f"{identity!r} is not a bottle identity")
    return Filing(
        version=FORMAT_VERSION,
        id=_check_id(proposal_id),
        identity=identity,
        reason=_check_reason(reason),
        payload=validate_payload(payload),
        filed_at=utc_timestamp(now),
    )


def payload_from_request(body: dict[str, object]) -> tuple[str, Payload]:
    """(reason, payload) from an API request: ``{"kind": ..., "reason": ..., <payload fields>}``.

    Also accepts the payload nested under ``"payload"``. ``ProposalRefused`` for
    anything else, naming the field.
    """
    if not isinstance(body, dict):
        raise _refused("the request body must be a JSON object")
    for field in _HOST_FIELDS:
        if field in body:
            raise _refused(f"a proposal may not set {field!r}: only the host decides")
    fields = dict(body.get("payload") or {}) if isinstance(body.get("payload"), dict) else {}
    fields.update({k: v for k, v in body.items() if k not in ("reason", "payload", "id", "identity")})
    kind = fields.get("kind")
    if kind not in KINDS:
        raise _refused(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    try:
        payload = msgspec.convert(fields, type=Payload)
    except msgspec.ValidationError as exc:
        raise _refused(f"the {kind} proposal is malformed: {exc}") from None
    return _check_reason(body.get("reason")), payload


def encode_filing(filing: Filing) -> bytes:
    return msgspec.json.format(msgspec.json.encode(filing), indent=2) + b"\n"


def parse_filing(data: bytes, *, name: str, identity: str) -> Filing:
    """A filing read from the file ``name`` of bottle ``identity``'s queue, checked end to end.

    Refuses (``ProposalRefused`` with the reason) a file that is too large,
    not JSON, carries a status or any host field (forged), has a malformed or
    out-of-range id, one that differs from its file name, another bottle's
    identity, or a payload ``validate_payload`` refuses.
    """
    expected_id = id_from_name(name)
    if len(data) > MAX_FILING_BYTES:
        raise _refused(f"{name}: the file is {len(data)} bytes; a proposal is at most {MAX_FILING_BYTES}")
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _refused(f"{name}: not a JSON proposal ({exc})") from None
    if not isinstance(raw, dict):
        raise _refused(f"{name}: not a JSON object")
    forged = [f for f in _HOST_FIELDS if f in raw]
    if forged:
        what = f"status {raw['status']!r}" if "status" in forged else f"the host field {forged[0]!r}"
        raise _refused(
            f"{name}: a file from the bottle's side carries {what}; only the host decides, so it is forged",
            hint="nothing was applied; look at what runs in that bottle",
        )
    try:
        filing = msgspec.convert(raw, type=Filing)
    except msgspec.ValidationError as exc:
        raise _refused(f"{name}: malformed proposal ({exc})") from None
    if filing.version != FORMAT_VERSION:
        raise _refused(f"{name}: proposal format version {filing.version}; this bottle reads {FORMAT_VERSION}")
    _check_id(filing.id)
    if filing.id != expected_id:
        raise _refused(f"{name}: the file claims id {filing.id}, its name says {expected_id}")
    if filing.identity != identity:
        raise _refused(f"{name}: the proposal is for bottle {filing.identity!r}, but it is in {identity!r}'s queue")
    try:
        _parse_time(filing.filed_at)
    except ValueError as exc:
        raise _refused(f"{name}: filed_at: {exc}") from None
    payload = validate_payload(filing.payload)
    reason = _check_reason(filing.reason)
    return msgspec.structs.replace(filing, payload=payload, reason=reason)


def encode_decision(decision: Decision) -> bytes:
    return msgspec.json.format(msgspec.json.encode(decision), indent=2) + b"\n"


def parse_decision(data: bytes, *, proposal_id: int, identity: str) -> Decision:
    """A decision file of the host; ``ProposalRefused`` when it does not belong to ``identity``/``proposal_id``."""
    try:
        decision = msgspec.json.decode(data, type=Decision)
    except msgspec.DecodeError as exc:
        if "missing required field `filing" in str(exc):
            # Decided before decisions kept their own copy of the filing: the
            # sidecar's file cannot stand in for it, so the decision is not used.
            raise _refused(
                f"decision {proposal_id} was written by an older bottle and keeps no copy of what was decided; "
                "it is not carried over",
                hint="ask the agent to propose it again, and decide it again",
            ) from None
        raise _refused(f"decision {proposal_id}: unreadable ({exc})") from None
    if decision.id != proposal_id or decision.identity != identity:
        raise _refused(f"decision {proposal_id}: it names {decision.identity}/{decision.id}")
    return decision


def proposal_view(filing: Filing, decision: Decision | None, *, filing_digest: str = "") -> Proposal:
    """What people (and the agent) see of a proposal.

    Once decided, the decision's own copy of the filing is what is shown:
    the file in ``proposals/`` no longer counts.
    """
    if decision is not None:
        filing, filing_digest = decision.filing, decision.filing_digest
    base = Proposal(
        id=filing.id,
        identity=filing.identity,
        kind=filing.kind,
        reason=filing.reason,
        payload=filing.payload,
        status="pending",
        filed_at=filing.filed_at,
        filing_digest=filing_digest,
    )
    if decision is None:
        return base
    return msgspec.structs.replace(
        base,
        status=decision.status,
        note=decision.note,
        decided_by=decision.decided_by,
        decided_at=decision.decided_at,
        applied_at=decision.applied_at,
        grant=decision.grant,
        expires_at=decision.expires_at,
        error=decision.error,
        resume_hint=decision.resume_hint,
        build_network=decision.build_network,
    )


def filing_of(proposal: Proposal) -> Filing:
    """The filing ``proposal`` was read from (as a decision keeps it)."""
    return Filing(FORMAT_VERSION, proposal.id, proposal.identity, proposal.reason, proposal.payload, proposal.filed_at)


# -- decisions -------------------------------------------------------------------


def decide(
    proposal: Proposal,
    status: str,
    *,
    decided_by: str,
    now: datetime,
    note: str = "",
    grant: Grant | None = None,
    previous: Decision | None = None,
    error: str = "",
    policy_digest: str = "",
    resume_hint: str = "",
    build_network: bool = False,
) -> Decision:
    """The host's decision moving ``proposal`` to ``status``; ``ProposalRefused`` for a move ``TRANSITIONS`` forbids.

    ``decided_by`` names the person (or program) deciding; it is required, so
    every change in the audit log has an author.
    """
    if status not in STATUSES:
        raise _refused(f"{status!r} is not a proposal status")
    if status not in TRANSITIONS.get(proposal.status, frozenset()):
        raise _refused(
            f"proposal {proposal.ref} is {proposal.status}; it cannot become {status}",
            hint="`bottle proposals ls` shows what is still pending",
        )
    if not decided_by.strip():
        raise _refused("a decision needs the name of who decided")
    if len(note) > MAX_NOTE_CHARS:
        raise _refused(f"the note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}")
    _no_secret(note, "note")
    if grant is not None and proposal.kind != "allow-host" and grant.mode != "lifetime":
        raise _refused(f"a {grant.mode} grant applies to allow-host proposals only; {proposal.ref} is {proposal.kind}")
    if build_network and proposal.kind != "capability-change":
        raise _refused(f"--build-network applies to capability changes only; {proposal.ref} is {proposal.kind}")
    if previous is None and not proposal.filing_digest.startswith("sha256:"):
        raise _refused(f"proposal {proposal.ref} was not read from a pinned filing; it cannot be decided")
    stamp = utc_timestamp(now)
    if previous is not None:
        # approved -> applied/failed keeps who decided and why.
        return msgspec.structs.replace(
            previous,
            status=status,  # type: ignore[arg-type]
            applied_at=stamp if status == "applied" else previous.applied_at,
            error=error or previous.error,
            policy_digest=policy_digest or previous.policy_digest,
            resume_hint=resume_hint or previous.resume_hint,
        )
    expires = ""
    if grant is not None and grant.mode == "duration":
        expires = utc_timestamp(now + timedelta(seconds=grant.seconds))
    return Decision(
        version=FORMAT_VERSION,
        id=proposal.id,
        identity=proposal.identity,
        status=status,  # type: ignore[arg-type]
        decided_by=decided_by.strip(),
        decided_at=stamp,
        filing=filing_of(proposal),
        filing_digest=proposal.filing_digest,
        note=note.strip(),
        grant=grant if proposal.kind == "allow-host" else None,
        expires_at=expires,
        error=error,
        build_network=build_network and status == "approved",
    )


class ProposalEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of ``audit/supervise.jsonl``: a proposal filed, decided, applied, failed or refused."""

    time: str
    identity: str
    role: str
    event: str
    proposal: int = 0
    kind: str = ""
    decided_by: str = ""
    note: str = ""
    change: str = ""
    reason: str = ""


def encode_event(event: ProposalEvent) -> bytes:
    """One JSON line; notes and reasons are redacted of anything a scanner recognises."""
    clean = msgspec.structs.replace(
        event, note=_SCANNER.redact(event.note), reason=_SCANNER.redact(event.reason), change=_SCANNER.redact(event.change)
    )
    return msgspec.json.encode(clean) + b"\n"


def event_for(decision: Decision, proposal: Proposal, *, change: str = "") -> ProposalEvent:
    """The audit event of ``decision`` (who decided, the note, what changed)."""
    return ProposalEvent(
        time=decision.applied_at if decision.status == "applied" else decision.decided_at,
        identity=proposal.identity,
        role="supervise",
        event=decision.status,
        proposal=proposal.id,
        kind=proposal.kind,
        decided_by=decision.decided_by,
        note=decision.note,
        change=change or proposal.describe(),
        reason=decision.error,
    )


class ApprovalEffects(msgspec.Struct, frozen=True):
    """What applying an approved proposal writes.

    ``policy`` (a new policy document) and/or ``grants`` (a new grants
    document) for hosts and routes; ``dockerfile`` for a capability change.
    ``restart`` says the bottle must be torn down with its state preserved
    and resumed for the change to take effect; ``change`` describes it.
    """

    change: str
    policy: PolicyDocument | None = None
    grants: GrantsDocument | None = None
    dockerfile: str | None = None
    restart: bool = False
    resume_hint: str = ""


def approval_effects(
    proposal: Proposal,
    decision: Decision,
    policy: PolicyDocument,
    grants: GrantsDocument,
    *,
    now: datetime,
    used: Iterable[int] = (),
) -> ApprovalEffects:
    """What approving ``proposal`` (as ``decision`` says) changes, given the bottle's current files.

    allow-host, lifetime: the host joins the policy document's allowlist.
    allow-host, single-use or duration: a ``HostGrant`` joins the grants
    document (grants no longer live at ``now`` are dropped on the way).
    add-route: the route joins the policy document's routes; its secret
    reaches the sidecars only at a launch, so ``restart`` is set.
    capability-change: the new Dockerfile; ``restart`` is set.
    """
    if decision.status != "approved":
        raise _refused(f"proposal {proposal.ref} is {decision.status}, not approved")
    kept = live_grants(grants, now, used)
    payload = proposal.payload
    if isinstance(payload, AllowHost):
        grant = decision.grant or Grant("lifetime")
        change = f"allow {payload.host} {grant.describe()}"
        if grant.mode == "lifetime":
            doc = policy_document(
                [*policy.allow, payload.host],
                RouteTable(policy.routes),
                allow_private=policy.allow_private,
                identity=policy.identity,
                agent=policy.agent,
            )
            return ApprovalEffects(change, policy=doc, grants=GrantsDocument(grants=kept))
        new = HostGrant(proposal.id, payload.host, grant.mode, decision.expires_at if grant.mode == "duration" else "")
        return ApprovalEffects(change, grants=GrantsDocument(grants=(*kept, new)))
    hint = f"bottle resume {proposal.identity}"
    if isinstance(payload, AddRoute):
        table = build_route_table(
            [*(_RouteSpec(r.upstream, r.token_ref, r.auth_scheme) for r in policy.routes), payload]
        )
        doc = policy_document(
            policy.allow,
            table,
            allow_private=policy.allow_private,
            identity=policy.identity,
            agent=policy.agent,
        )
        return ApprovalEffects(
            f"add route {payload.upstream} (secret from {payload.token_ref})",
            policy=doc,
            restart=True,
            resume_hint=hint,
        )
    assert isinstance(payload, CapabilityChange)
    return ApprovalEffects(payload.describe(), dockerfile=payload.dockerfile, restart=True, resume_hint=hint)


class _RouteSpec(msgspec.Struct, frozen=True):
    upstream: str
    token_ref: str
    auth_scheme: str


def change_preview(proposal: Proposal, *, allow: Sequence[str] = (), dockerfile: str = "") -> str:
    """What approving ``proposal`` changes, for a person: an allowlist delta or a Dockerfile diff.

    ``allow`` is the bottle's current allowlist, ``dockerfile`` its current
    per-bottle Dockerfile ('' when it has none).
    """
    import difflib  # noqa: PLC0415 - only when a preview is drawn

    payload = proposal.payload
    if isinstance(payload, AllowHost):
        if payload.host in allow:
            return f"  {payload.host} (already on the allowlist)"
        return "\n".join([*(f"  {p}" for p in allow), f"+ {payload.host}"])
    if isinstance(payload, AddRoute):
        return (
            f"+ route {payload.upstream}\n"
            f"    auth: {payload.auth_scheme}, secret from {payload.token_ref} (must be set on the host)\n"
            "    takes effect when the bottle is resumed"
        )
    assert isinstance(payload, CapabilityChange)
    diff = difflib.unified_diff(
        dockerfile.splitlines(),
        payload.dockerfile.splitlines(),
        "current Dockerfile" if dockerfile else "(no per-bottle Dockerfile)",
        "proposed Dockerfile",
        lineterm="",
    )
    return "\n".join(diff)


def approved_changes(proposals: Iterable[Proposal]) -> tuple[tuple[str, ...], tuple[AddRoute, ...]]:
    """(hosts, routes) that applied lifetime proposals added; a resumed bottle's plan keeps them."""
    hosts: list[str] = []
    routes: list[AddRoute] = []
    for p in proposals:
        if p.status != "applied":
            continue
        if isinstance(p.payload, AllowHost) and (p.grant is None or p.grant.mode == "lifetime"):
            hosts.append(p.payload.host)
        elif isinstance(p.payload, AddRoute):
            routes.append(p.payload)
    return tuple(dict.fromkeys(hosts)), tuple(routes)


MCP_SERVER_NAME = "bottle-supervise"


def claude_code_mcp_config(existing: bytes | None, url: str) -> bytes:
    """``~/.claude.json`` with the supervise MCP server registered (user scope), everything else kept.

    ``existing`` is the file as the agent left it (None: absent); when it
    already registers exactly this server it is returned unchanged, byte for
    byte (a resumed transcript stays as it was). Raises ``ValueError`` if it
    is not a JSON object; the caller then leaves it alone.
    """
    data = {} if not existing else json.loads(existing)
    if not isinstance(data, dict):
        raise ValueError("~/.claude.json is not a JSON object")
    entry = {"type": "http", "url": url.rstrip("/") + "/mcp"}
    servers = data.get("mcpServers")
    servers = dict(servers) if isinstance(servers, dict) else {}
    if existing and servers.get(MCP_SERVER_NAME) == entry:
        return existing
    servers[MCP_SERVER_NAME] = entry
    data["mcpServers"] = servers
    return (json.dumps(data, indent=2) + "\n").encode()

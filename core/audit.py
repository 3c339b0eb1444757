"""The audit log of the egress sidecars: one JSON line per decision, never a secret.

Every decision the guard or the egress proxy takes (a connection, a request,
a streamed body) becomes one ``AuditRecord``, written as one line of
``audit/<role>/<role>.jsonl`` in the bottle's state. A record holds the request's
method, host and path with every secret the scanner recognises replaced by
``[REDACTED:<kind>]``, the verdict, the rule, and secret-free descriptions of
what was found.

``encode_audit_line`` is the only way records are written: it redacts, encodes,
then scans the finished line once more and, should anything still look like a
secret (a form the first pass could not attribute to a field), blanks the
free-text fields before returning. A line never carries a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import msgspec

from bottle.core.secretscan import Finding, SecretScanner

MAX_FIELD = 2048
REDACTED = "[redacted]"


class AuditRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One decision. ``event`` is ``connect``, ``request`` or ``body``; ``verdict`` is ``allow`` or ``deny``."""

    time: str
    identity: str
    role: str
    event: str
    verdict: str
    rule: str
    method: str = ""
    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str = ""
    reason: str = ""
    findings: tuple[str, ...] = ()
    route: str = ""
    address: str = ""
    status: int = 0


def utc_timestamp(now: datetime) -> str:
    """RFC 3339 UTC with milliseconds (``2026-01-02T03:04:05.678Z``); ``now`` must be timezone-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("audit time must be timezone-aware")
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


def audit_record(
    *,
    now: datetime,
    identity: str,
    role: str,
    event: str,
    allow: bool,
    rule: str,
    method: str = "",
    scheme: str = "",
    host: str = "",
    port: int = 0,
    path: str = "",
    reason: str = "",
    findings: Sequence[Finding] = (),
    route: str = "",
    address: str = "",
    status: int = 0,
) -> AuditRecord:
    """Build a record from the raw facts of a decision (redaction happens in ``encode_audit_line``)."""
    return AuditRecord(
        time=utc_timestamp(now),
        identity=identity,
        role=role,
        event=event,
        verdict="allow" if allow else "deny",
        rule=rule,
        method=method,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        reason=reason,
        findings=tuple(f.describe() for f in findings),
        route=route,
        address=address,
        status=status,
    )


def _redacted(record: AuditRecord, scanner: SecretScanner) -> AuditRecord:
    return msgspec.structs.replace(
        record,
        host=_clip(scanner.redact(record.host)),
        path=_clip(scanner.redact(record.path)),
        reason=_clip(scanner.redact(record.reason)),
        method=_clip(scanner.redact(record.method)),
    )


def encode_audit_line(record: AuditRecord, scanner: SecretScanner) -> bytes:
    """The record as one JSON line (ending in ``\\n``), redacted with ``scanner``.

    Guarantee: ``scanner.scan`` finds nothing in the returned line.
    """
    clean = _redacted(record, scanner)
    line = msgspec.json.encode(clean)
    if scanner.scan(line, "audit"):
        clean = msgspec.structs.replace(clean, host=REDACTED, path=REDACTED, reason=REDACTED, method=REDACTED)
        line = msgspec.json.encode(clean)
        if scanner.scan(line, "audit"):
            # Only the fixed fields are left; keep the decision, drop the rest.
            clean = AuditRecord(
                time=clean.time, identity=REDACTED, role=clean.role, event=clean.event,
                verdict=clean.verdict, rule=clean.rule,
            )
            line = msgspec.json.encode(clean)
    return line + b"\n"


def decode_audit_line(line: bytes | str) -> AuditRecord:
    """Parse one line back (for tests and tools); ``msgspec.DecodeError`` if it is not a record."""
    return msgspec.json.decode(line, type=AuditRecord)

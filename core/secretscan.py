"""Finding secrets in outbound bytes: the scanner the guard and the git gate share.

Two kinds of secret are looked for:

- **Known token formats**, wherever they come from (a ``.env`` in the
  project, a config file the agent read): Anthropic ``sk-ant-``, OpenAI
  ``sk-``/``sk-proj-``, GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``,
  GitLab ``glpat-``, AWS access key ids ``AKIA``/``ASIA`` (and a 40-character
  secret key next to one or after an ``aws_secret_access_key =``), Google
  ``AIza``, Slack ``xox[baprs]-``, Stripe ``sk_live_``/``rk_live_``, PEM
  private key blocks and JSON Web Tokens. Found raw, percent-decoded, and
  base64- or hex-encoded (anchored on the encoded form of the format's
  prefix, then decoded and confirmed).
- **The bottle's own brokered secrets** (the values behind its routes'
  ``token_ref``), found raw, percent-encoded, hex (either case) and base64
  (standard and URL-safe, all three byte alignments, so a secret embedded
  anywhere inside a larger base64 blob is still found).

A ``Finding`` says what was found, where and how it was encoded, as byte
offsets into the scanned data; it never holds the secret or any part of it,
so findings can go into logs, audit lines and error messages.

``SecretScanner.stream`` scans a body chunk by chunk with bounded memory: it
holds back the last ``overlap`` bytes of every chunk, so a secret split
across chunks is found before any byte of it is released.

Pure: ``re``, ``base64``, ``binascii`` and ``urllib.parse`` only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple
from urllib.parse import quote, quote_plus, unquote_to_bytes

import msgspec

ENCODINGS = ("raw", "url", "base64", "hex")  # the values of Finding.encoding
BROKERED = "brokered-secret"

# A brokered secret shorter than this would match ordinary text; only its
# raw and hex forms are searched then, and its encodings are skipped.
MIN_ENCODED_SECRET = 8


class Finding(msgspec.Struct, frozen=True):
    """One secret found in scanned data. Holds no part of the secret.

    ``start``/``end`` are byte offsets of the (possibly encoded) text in the
    data of ``location`` as it was scanned: for a percent-encoded or
    base64-embedded secret they cover the encoded run. ``slot`` names the
    brokered secret (its ``BOTTLE_TOKEN_n``), None for a known format.
    """

    kind: str
    location: str
    start: int
    end: int
    encoding: str = "raw"
    slot: str | None = None

    def describe(self) -> str:
        """A one-line, secret-free description for people."""
        what = LABELS.get(self.kind, self.kind)
        if self.slot is not None:
            what = f"{what} {self.slot}"
        enc = "" if self.encoding == "raw" else f" ({self.encoding}-encoded)"
        return f"{what}{enc} in {self.location}"


class TokenFormat(NamedTuple):
    kind: str
    prefixes: tuple[bytes, ...]
    # Starts with a literal, so the regex engine can skip ahead to it.
    pattern: re.Pattern[bytes]
    # Bytes that may not come right before a match (keeps "task-..." from
    # reading as an "sk-" key).
    not_after: bytes = b""
    # Extra check on a regex match, to keep ordinary words out.
    accept: Callable[[bytes], bool] | None = None


def _mixed(token: bytes) -> bool:
    # Random keys mix digits and both cases; prose and slugs rarely do.
    return (
        any(48 <= c <= 57 for c in token)
        and any(65 <= c <= 90 for c in token)
        and any(97 <= c <= 122 for c in token)
    )


_WORD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

TOKEN_FORMATS: tuple[TokenFormat, ...] = (
    TokenFormat("anthropic-api-key", (b"sk-ant-",), re.compile(rb"sk-ant-[A-Za-z0-9_\-]{20,}")),
    TokenFormat(
        "openai-api-key",
        (b"sk-",),
        re.compile(rb"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
        _WORD,
        lambda m: _mixed(m[3:]),
    ),
    TokenFormat(
        "github-token",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
        re.compile(rb"gh(?:[pousr]_[A-Za-z0-9]{36,}|ub_pat_[A-Za-z0-9_]{22,})"),
    ),
    TokenFormat(
        "gitlab-token",
        (b"glpat-", b"gldt-", b"glrt-", b"glptt-"),
        re.compile(rb"gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_\-]{20,}"),
    ),
    TokenFormat(
        "aws-access-key-id",
        (b"AKIA", b"ASIA"),
        re.compile(rb"A(?:KIA|SIA)[A-Z0-9]{16}"),
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    ),
    TokenFormat("google-api-key", (b"AIza",), re.compile(rb"AIza[0-9A-Za-z_\-]{35}")),
    TokenFormat("slack-token", (b"xoxb-", b"xoxa-", b"xoxp-", b"xoxr-", b"xoxs-"), re.compile(rb"xox[baprs]-[A-Za-z0-9\-]{10,}")),
    TokenFormat("stripe-live-key", (b"sk_live_", b"rk_live_"), re.compile(rb"[sr]k_live_[A-Za-z0-9]{20,}"), _WORD),
    TokenFormat(
        "private-key",
        (b"-----BEGIN ",),
        re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ),
    TokenFormat(
        "jwt",
        (b"eyJ",),
        re.compile(rb"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
        _WORD,
    ),
)

_ALL_PREFIXES = sorted({p for f in TOKEN_FORMATS for p in f.prefixes}, key=len, reverse=True)
_ANY_PREFIX = re.compile(b"|".join(re.escape(p) for p in _ALL_PREFIXES))
# The literals _ANY_PREFIX may report for a format: its prefixes, and the
# longer prefixes that begin with one of them (it reports the longest).
_PREFIXES_OF: dict[str, frozenset[bytes]] = {
    f.kind: frozenset(q for q in _ALL_PREFIXES for p in f.prefixes if q.startswith(p)) for f in TOKEN_FORMATS
}
_SHORT = 2048

LABELS: dict[str, str] = {
    "anthropic-api-key": "Anthropic API key",
    "openai-api-key": "OpenAI API key",
    "github-token": "GitHub token",
    "gitlab-token": "GitLab token",
    "aws-access-key-id": "AWS access key id",
    "aws-secret-access-key": "AWS secret access key",
    "google-api-key": "Google API key",
    "slack-token": "Slack token",
    "stripe-live-key": "Stripe live key",
    "private-key": "private key block",
    "jwt": "JSON Web Token",
    BROKERED: "brokered secret",
}

_AWS_SECRET_NEAR = 256
_AWS_SECRET = re.compile(rb"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")  # only near a key id
# Matched against the lowercased data, so the literal "secret" leads.
_AWS_SECRET_KEYWORD = re.compile(rb"secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?")
_AWS_SECRET_VALUE = re.compile(rb"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")
_AWS_SECRET_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+")
_B64_TRANSLATE = bytes.maketrans(b"-_", b"+/")


class BrokeredSecret:
    """A secret this bottle brokers, known to the scanner by its slot.

    Its ``repr`` never shows the value.
    """

    __slots__ = ("slot", "value")

    def __init__(self, slot: str, value: str) -> None:
        if not value:
            raise ValueError(f"the secret in {slot} is empty")
        self.slot = slot
        self.value = value

    def __repr__(self) -> str:
        return f"BrokeredSecret({self.slot!r}, <{len(self.value)} characters>)"


def _b64_cores(data: bytes, alphabet: Callable[[bytes], bytes]) -> list[bytes]:
    """The base64 text of ``data`` that is the same wherever it sits in a larger blob.

    For each of the 3 byte alignments, the characters whose 6 bits all come
    from ``data`` (the neighbours decide the ones at either end).
    """
    cores = []
    n = len(data)
    for k in range(3):
        enc = alphabet(b"\0" * k + data + b"\0\0")
        start = -(-8 * k // 6)
        end = 8 * (k + n) // 6
        core = enc[start:end]
        if core:
            cores.append(core)
    return cores


def _std(data: bytes) -> bytes:
    return base64.b64encode(data)


def _urlsafe(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data)


def encoded_forms(value: bytes) -> list[tuple[str, bytes]]:
    """Every (encoding, needle) under which ``value`` is searched, without duplicates.

    Raw; percent-encoded (upper and lower hex digits, and ``+`` for space);
    hex in both cases; base64 and URL-safe base64 cores at all 3 alignments.
    Values shorter than ``MIN_ENCODED_SECRET`` get raw and hex only.
    """
    forms: dict[bytes, str] = {value: "raw"}

    def add(enc: str, needle: bytes) -> None:
        if needle:
            forms.setdefault(needle, enc)

    text = value.decode("utf-8", "surrogateescape")
    add("hex", binascii.hexlify(value))
    add("hex", binascii.hexlify(value).upper())
    if len(value) >= MIN_ENCODED_SECRET:
        q = quote(text, safe="", errors="surrogateescape").encode("ascii")
        add("url", q)
        add("url", re.sub(rb"%[0-9A-F]{2}", lambda m: m[0].lower(), q))
        add("url", quote_plus(text, safe="", errors="surrogateescape").encode("ascii"))
        for core in _b64_cores(value, _std) + _b64_cores(value, _urlsafe):
            add("base64", core)
    return [(enc, needle) for needle, enc in forms.items()]


class _Anchor(NamedTuple):
    needle: bytes
    encoding: str  # "base64" | "hex"


def _prefix_anchors(prefixes: Iterable[bytes]) -> list[_Anchor]:
    anchors: dict[bytes, str] = {}
    for prefix in prefixes:
        if len(prefix) < 3:
            continue
        for core in _b64_cores(prefix, _std) + _b64_cores(prefix, _urlsafe):
            if len(core) >= 3:
                anchors.setdefault(core, "base64")
        hx = binascii.hexlify(prefix)
        anchors.setdefault(hx, "hex")
        anchors.setdefault(hx.upper(), "hex")
    return [_Anchor(n, e) for n, e in anchors.items()]


def _b64_decodings(run: bytes) -> Iterable[bytes]:
    """Decode a base64 run at each of its 4 character offsets (one of them is the true one)."""
    std = run.translate(_B64_TRANSLATE).rstrip(b"=")
    for i in range(4):
        piece = std[i:]
        # Pad a short last group so its bytes are kept; a single leftover
        # character carries no whole byte and is dropped.
        if len(piece) % 4 == 1:
            piece = piece[:-1]
        piece += b"=" * (-len(piece) % 4)
        if piece:
            try:
                yield base64.b64decode(piece)
            except (binascii.Error, ValueError):
                continue


def _hex_decodings(run: bytes) -> Iterable[bytes]:
    for i in range(2):
        piece = run[i:]
        piece = piece[: len(piece) - len(piece) % 2]
        if piece:
            yield binascii.unhexlify(piece)


_PCT_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
_PCT_CONTEXT = 320


class _PctIndex:
    """Maps offsets in ``unquote_to_bytes(data)`` back to ``data`` by bisecting the escapes' positions."""

    def __init__(self, data: bytes) -> None:
        self._n = len(data)
        self._raw = [m.start() for m in _PCT_ESCAPE.finditer(data)]
        # Decoded offset of each escape: its raw offset minus 2 per escape before it.
        self._dec = [pos - 2 * i for i, pos in enumerate(self._raw)]

    def start(self, s: int) -> int:
        k = bisect.bisect_right(self._dec, s)
        if k and self._dec[k - 1] == s:
            return self._raw[k - 1]
        return s + 2 * k

    def end(self, e: int, decoded_len: int) -> int:
        return self.start(e) if e < decoded_len else self._n


def _trie_regex(words: Iterable[bytes]) -> re.Pattern[bytes]:
    """One regex matching any of ``words``, shaped as a trie so a position costs one branch, not one per word."""
    trie: dict = {}
    for word in words:
        node = trie
        for c in word:
            node = node.setdefault(c, {})
        node[None] = {}

    def emit(node: dict) -> bytes:
        alts = [re.escape(bytes([c])) + emit(sub) for c, sub in sorted((k, v) for k, v in node.items() if k is not None)]
        if not alts:
            return b""
        body = alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
        return b"(?:" + body + b")?" if None in node else body

    return re.compile(emit(trie) or rb"(?!)")


def _finditer(fmt: TokenFormat, data: bytes) -> Iterable[re.Match[bytes]]:
    """``fmt.pattern.finditer(data)``, faster for a pattern the regex engine cannot skip through.

    A pattern that opens with a literal is located by a fast substring
    search; one that opens with a class (``[sr]k_live_``) is tried at every
    byte. On long data such a pattern is tried only where one of its
    prefixes starts (every match starts with one), non-overlapping as
    ``finditer`` gives them.
    """
    if len(data) <= _SHORT or fmt.pattern.pattern[:1] not in (b"[", b"("):
        yield from fmt.pattern.finditer(data)
        return
    starts: list[int] = []
    for prefix in fmt.prefixes:
        i = data.find(prefix)
        while i >= 0:
            starts.append(i)
            i = data.find(prefix, i + 1)
    last = 0
    for i in sorted(starts):
        if i < last:
            continue
        m = fmt.pattern.match(data, i)
        if m is not None:
            last = m.end()
            yield m


class SecretScanner:
    """Finds known token formats and this bottle's brokered secrets in bytes.

    Build one per policy (it precomputes every encoded form of every
    secret); ``scan`` is then safe to call from any number of requests.
    """

    def __init__(self, brokered: Iterable[BrokeredSecret] = ()) -> None:
        self._brokered: tuple[BrokeredSecret, ...] = tuple(brokered)
        needles: list[tuple[bytes, str, str]] = []  # (needle, encoding, slot)
        seen: set[bytes] = set()
        for secret in self._brokered:
            for enc, needle in encoded_forms(secret.value.encode("utf-8", "surrogateescape")):
                if needle not in seen:
                    seen.add(needle)
                    needles.append((needle, enc, secret.slot))
        # Longer needles first, so a raw secret is reported as raw, not as
        # the hex of a prefix that happens to match.
        needles.sort(key=lambda t: -len(t[0]))
        self._needles = tuple(needles)
        self._raw_needles = tuple((s.value.encode("utf-8", "surrogateescape"), s.slot) for s in self._brokered)
        self._anchors = _prefix_anchors(p for f in TOKEN_FORMATS for p in f.prefixes)
        self._anchor_res = {
            enc: _trie_regex(a.needle for a in self._anchors if a.encoding == enc) for enc in ("base64", "hex")
        }
        longest = max((len(n) for n, _, _ in needles), default=0)
        # Enough context for every pattern's shortest match, the AWS
        # proximity window, and three encodings of the longest secret.
        self.overlap: int = max(640, longest + 64, 3 * max((len(s.value) for s in self._brokered), default=0) + 64)

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(s.slot for s in self._brokered)

    # -- scanning ---------------------------------------------------------
    def scan(self, data: bytes | str, location: str) -> list[Finding]:
        """Every secret in ``data`` (bytes, or text encoded as UTF-8), in order of offset."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        found: dict[tuple[str, int, str | None], Finding] = {}

        def add(f: Finding) -> None:
            found.setdefault((f.kind, f.start, f.slot), f)

        for kind, start, end in self._formats(data):
            add(Finding(kind, location, start, end, "raw"))
        for needle, enc, slot in self._needles:
            i = data.find(needle)
            while i >= 0:
                add(Finding(BROKERED, location, i, i + len(needle), enc, slot))
                i = data.find(needle, i + 1)
        if b"%" in data:
            self._scan_percent(data, location, add)
        if self._anchors:
            self._scan_encoded_formats(data, location, add)
        return sorted(found.values(), key=lambda f: (f.start, f.end, f.kind))

    def scan_fields(self, fields: Sequence[tuple[str, str]]) -> list[Finding]:
        """Scan several short (location, text) fields at once (URL, headers).

        Joined with newlines, which no token contains, so one pass costs
        about as much as one field; findings are reported per field.
        """
        if not fields:
            return []
        parts = [text.encode("utf-8", "surrogateescape") for _, text in fields]
        starts: list[int] = []
        pos = 0
        for p in parts:
            starts.append(pos)
            pos += len(p) + 1
        joined = b"\n".join(parts)
        out: list[Finding] = []
        for f in self.scan(joined, ""):
            idx = bisect.bisect_right(starts, f.start) - 1
            base = starts[idx]
            end = min(f.end - base, len(parts[idx]))
            out.append(Finding(f.kind, fields[idx][0], f.start - base, end, f.encoding, f.slot))
        return out

    def stream(self, location: str) -> StreamScan:
        """A chunk-by-chunk scanner for one body (see ``StreamScan``)."""
        return StreamScan(self, location)

    def redact(self, text: str, findings: Sequence[Finding] | None = None) -> str:
        """``text`` with every secret (or the given findings of it) replaced by ``[REDACTED:<kind>]``."""
        data = text.encode("utf-8", "surrogateescape")
        spans = findings if findings is not None else self.scan(data, "")
        if not spans:
            return text
        out, pos = [], 0
        for f in sorted(spans, key=lambda f: f.start):
            if f.end <= pos:
                continue
            start = max(f.start, pos)
            out.append(data[pos:start])
            out.append(f"[REDACTED:{f.kind}]".encode())
            pos = f.end
        out.append(data[pos:])
        return b"".join(out).decode("utf-8", "replace")

    # -- the parts of scan ---------------------------------------------------
    def _formats(self, data: bytes) -> Iterable[tuple[str, int, int]]:
        aws_ids: list[tuple[int, int]] = []
        if len(data) <= _SHORT:
            # One pass of the regex engine beats one search per prefix on short data.
            present = {m[0] for m in _ANY_PREFIX.finditer(data)}
            candidates = [f for f in TOKEN_FORMATS if any(p in present for p in _PREFIXES_OF[f.kind])]
        else:
            # A pattern that opens with a literal is searched for as fast as
            # its prefixes would be; checking them first only doubles the work.
            candidates = list(TOKEN_FORMATS)
        for fmt in candidates:
            for m in _finditer(fmt, data):
                if fmt.not_after and m.start() > 0 and data[m.start() - 1] in fmt.not_after:
                    continue
                if fmt.accept is not None and not fmt.accept(m[0]):
                    continue
                if fmt.kind == "aws-access-key-id":
                    aws_ids.append(m.span())
                yield fmt.kind, m.start(), m.end()
        for a, b in aws_ids:
            lo = max(0, a - _AWS_SECRET_NEAR)
            for m in _AWS_SECRET.finditer(data, lo, b + _AWS_SECRET_NEAR):
                # endpos hides the byte after the window from the lookahead:
                # a longer word cut at the window's edge is not a 40-char key.
                if m.end() < len(data) and data[m.end()] in _AWS_SECRET_CHARS:
                    continue
                if _mixed(m[0]) or b"/" in m[0] or b"+" in m[0]:
                    yield "aws-secret-access-key", m.start(), m.end()
        if b"ecret" in data or b"ECRET" in data:
            lowered = data.lower()
            for m in _AWS_SECRET_KEYWORD.finditer(lowered):
                v = _AWS_SECRET_VALUE.match(data, m.end())
                if v is not None:
                    yield "aws-secret-access-key", v.start(), v.end()

    def _decoded_hits(self, decoded: bytes) -> Iterable[tuple[str, int, int, str | None]]:
        """Known formats and raw brokered secrets in text decoded from some encoding."""
        for kind, s, e in self._formats(decoded):
            yield kind, s, e, None
        for raw, slot in self._raw_needles:
            i = decoded.find(raw)
            while i >= 0:
                yield BROKERED, i, i + len(raw), slot
                i = decoded.find(raw, i + 1)

    def _scan_percent(self, data: bytes, location: str, add: Callable[[Finding], None]) -> None:
        # Only text near an escape decodes differently: decode the lines that
        # hold one, with _PCT_CONTEXT bytes around them (the AWS key id and
        # secret may sit that far apart), instead of the whole body.
        n = len(data)
        windows: list[list[int]] = []
        line_end = -1
        for m in _PCT_ESCAPE.finditer(data):
            if m.start() < line_end:
                continue  # another escape on a line already covered
            line_start = data.rfind(b"\n", 0, m.start()) + 1
            nl = data.find(b"\n", m.end())
            line_end = n if nl < 0 else nl
            lo, hi = max(0, line_start - _PCT_CONTEXT), min(n, line_end + _PCT_CONTEXT)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        for lo, hi in windows:
            part = data[lo:hi]
            decoded = unquote_to_bytes(part)
            if decoded == part:
                continue
            hits = list(self._decoded_hits(decoded))
            if not hits:
                continue
            index = _PctIndex(part)
            for kind, s, e, slot in hits:
                add(Finding(kind, location, lo + index.start(s), lo + index.end(e, len(decoded)), "url", slot))

    def _scan_encoded_formats(self, data: bytes, location: str, add: Callable[[Finding], None]) -> None:
        n = len(data)
        for encoding, mask, min_run, _run_re in _ENCODED_RUNS:
            # Only long runs of the alphabet can hold an encoded token: jump
            # from one to the next with a substring search, and look for
            # every anchor in a run with one regex (a trie of the anchors).
            search = self._anchor_res[encoding].search
            marked = data.translate(mask)
            find, size = marked.find, len(min_run)
            pos = 0
            while True:
                start = find(min_run, pos)
                if start < 0:
                    break
                end = find(b"\x00", start + size)
                if end < 0:
                    end = n
                pos = end
                if search(data, start, end) is None:
                    continue
                # Extend over trailing base64 padding, which the mask leaves out.
                while end < n and data[end] == 0x3D and encoding == "base64":
                    end += 1
                chunk = data[start:end]
                decodings = _b64_decodings(chunk) if encoding == "base64" else _hex_decodings(chunk)
                for decoded in decodings:
                    hit = next(iter(self._formats(decoded)), None)
                    if hit is not None:
                        add(Finding(hit[0], location, start, end, encoding))
                        break


def _mask(alphabet: bytes) -> bytes:
    return bytes(1 if i in alphabet else 0 for i in range(256))


# The shortest token we look for is 20 bytes (an AWS key id): 27 base64
# characters or 40 hex digits.
_ENCODED_RUNS = (
    ("base64", _mask(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"), b"\x01" * 24,
     re.compile(rb"\x01{24,}")),
    ("hex", _mask(b"0123456789abcdefABCDEF"), b"\x01" * 40, re.compile(rb"\x01{40,}")),
)


class StreamScan:
    """Scans one body chunk by chunk, releasing only bytes already proven clean.

    ``feed(chunk)`` returns the bytes that may be forwarded now and the new
    findings; ``finish()`` returns the rest. A secret split across chunks is
    found before any of its bytes are released, because the last
    ``scanner.overlap`` bytes are always held back and scanned again with
    the next chunk. Memory: one chunk plus the overlap.
    """

    def __init__(self, scanner: SecretScanner, location: str) -> None:
        self._scanner = scanner
        self._location = location
        self._tail = b""
        self._base = 0  # absolute offset of self._tail[0]
        self._seen: set[tuple[str, int, str | None]] = set()
        self.findings: list[Finding] = []
        self.total = 0

    def _scan_window(self, window: bytes) -> list[Finding]:
        new = []
        for f in self._scanner.scan(window, self._location):
            shifted = Finding(f.kind, f.location, f.start + self._base, f.end + self._base, f.encoding, f.slot)
            key = (shifted.kind, shifted.start, shifted.slot)
            if key not in self._seen:
                self._seen.add(key)
                new.append(shifted)
        self.findings.extend(new)
        return new

    def feed(self, chunk: bytes) -> tuple[bytes, list[Finding]]:
        """Scan ``chunk``; return (bytes safe to forward, findings new in this chunk)."""
        self.total += len(chunk)
        window = self._tail + chunk if self._tail else chunk
        new = self._scan_window(window)
        keep = min(len(window), self._scanner.overlap)
        cut = len(window) - keep
        self._tail = window[cut:]
        self._base += cut
        return window[:cut], new

    def finish(self) -> bytes:
        """The held-back tail (already scanned); call once at end of body."""
        rest, self._tail = self._tail, b""
        self._base += len(rest)
        return rest

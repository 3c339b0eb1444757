"""The git gate's decisions: where brokered remotes live, how the agent reaches them, which pushes leave.

The git gate (``bottle.sidecars.git_gate``) serves one bare repository per
brokered remote over smart HTTP on the bottle's internal network. This
module holds everything it decides, as pure functions of text and bytes;
the sidecar only runs ``git`` and moves bytes.

- **Configuration.** ``GateRemote`` is one brokered remote as the gate sees
  it (upstream URL, the environment variable holding its credential, branch
  rules, finding waivers). The launch plan hands the list to the gate as
  JSON in ``BOTTLE_GIT_REMOTES`` (``encode_gate_config``); nothing in it is
  secret.
- **Addresses.** ``repo_path`` and ``gate_url`` say where a remote lives in
  the gate; ``gitconfig_rewrites`` renders the ``url.<gate>.insteadOf``
  lines of the agent's ``~/.gitconfig`` so ``git clone <upstream>`` and
  ``git push origin`` go to the gate without the agent knowing.
- **What a push adds.** ``parse_pre_receive`` reads the hook's stdin;
  ``LogSplitter`` cuts the output of ``git log -p`` (``PUSH_LOG_ARGS``) into
  one record per commit; ``scan_patch`` scans a commit's patch and keeps
  only what lands on *added* lines (and new file names), as file:line;
  ``scan_object`` scans a raw commit or tag object (author, message).
- **The verdict.** ``decide_gate_push`` combines the branch rules of
  ``bottle.core.gitpolicy`` with the findings, minus the manifest's waivers;
  ``verdict_message`` is what the agent reads. Neither ever holds a secret:
  a finding is a position and a rule, and file names are redacted.
"""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from bottle.core.gitpolicy import (
    RULE_OK,
    BranchRules,
    PushDecision,
    PushRefUpdate,
    decide_push,
    push_allowed,
)
from bottle.core.secretscan import BROKERED, SecretScanner
from bottle.ports.errors import InputError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_USERNAME",
    "GATE_HOST",
    "GATE_PORT",
    "GATE_ROOT",
    "HEALTH_PATH",
    "PUSH_LOG_ARGS",
    "RULE_NOT_COMMIT",
    "RULE_SECRET",
    "FindingWaiver",
    "GateConfig",
    "GateRemote",
    "GateVerdict",
    "InsecureUpstream",
    "LogSplitter",
    "PushFinding",
    "check_upstream",
    "decide_gate_push",
    "decode_gate_config",
    "encode_gate_config",
    "gate_remote",
    "gate_url",
    "gitconfig_rewrites",
    "parse_gate_path",
    "parse_pre_receive",
    "repo_path",
    "scan_object",
    "scan_patch",
    "scan_refs",
    "upstream_forms",
    "verdict_message",
]

GATE_HOST = "git-gate"
GATE_PORT = 8080
GATE_ROOT = "/srv/git"
CONFIG_ENV = "BOTTLE_GIT_REMOTES"
# Answers 200 "ok" once the gate serves (its repositories are prepared).
HEALTH_PATH = "/healthz"
# What the gate sends as the user name with the token; GitHub and most
# hosts take any name with a token, Bitbucket wants x-token-auth, GitLab oauth2.
DEFAULT_USERNAME = "x-access-token"
RULE_SECRET = "secret-found"
RULE_NOT_COMMIT = "not-a-commit"

_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SERVICES = ("info/refs", "git-upload-pack", "git-receive-pack")


# -- configuration ------------------------------------------------------------


class FindingWaiver(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A manifest rule that lets a known, harmless finding through.

    ``path`` is an fnmatch pattern on the file's path in the repository
    (``*`` also matches ``/``); ``rule`` is a scanner kind such as
    ``aws-access-key-id``. Both must match. Brokered secrets (the bottle's
    own credentials) are never waived.
    """

    path: str
    rule: str

    def covers(self, finding: PushFinding) -> bool:
        return (
            finding.rule != BROKERED
            and finding.where == "file"
            and finding.rule == self.rule
            and fnmatch.fnmatchcase(finding.path, self.path)
        )


class GateRemote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One brokered remote as the gate sees it.

    ``token_env`` names the gate's environment variable that holds the
    credential (``BOTTLE_GIT_TOKEN_<n>``), never the credential itself.
    ``protected`` and ``allow`` are the manifest's branch rules: protected
    branches take only fast-forwards and are never deleted (``main`` and
    ``master`` when none are listed); with ``allow`` non-empty only matching
    refs may be pushed.
    """

    name: str
    upstream: str
    token_env: str
    protected: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    username: str = DEFAULT_USERNAME
    waivers: tuple[FindingWaiver, ...] = ()

    def branch_rules(self) -> BranchRules:
        """The ``gitpolicy`` rules of this remote (see the class docstring for the defaults)."""
        if self.protected:
            return BranchRules(protected=self.protected, allow=self.allow or None)
        return BranchRules(allow=self.allow or None)


class GateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every remote one gate brokers."""

    remotes: tuple[GateRemote, ...] = ()

    def remote(self, name: str) -> GateRemote | None:
        return next((r for r in self.remotes if r.name == name), None)

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.remotes)


class InsecureUpstream(InputError):
    """A brokered remote's upstream is not an ``https://`` repository URL without credentials in it.

    The gate authenticates upstream with HTTP basic auth: over plain
    ``http://`` the token would cross the network in clear text.
    """


def check_upstream(name: str, upstream: str) -> None:
    """``InsecureUpstream`` unless ``upstream`` is ``https://host[:port]/path`` with no user or password in it.

    The message names the remote and the scheme it got, never the URL (it
    might hold a credential).
    """
    try:
        parts = urllib.parse.urlsplit(upstream)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InsecureUpstream(
            f"git remote {name!r}: the upstream is not a valid URL",
            hint="write the repository's https:// URL, like https://github.com/org/repo.git",
        ) from None
    if parts.scheme.lower() != "https":
        got = f"{parts.scheme}://"[:20] if parts.scheme else "no scheme"
        raise InsecureUpstream(
            f"git remote {name!r}: the upstream must be an https:// URL, got {got}",
            hint="the git gate sends the remote's token with every request; it only does so over https "
            "(plain http would send it in clear text). Use the host's https:// URL",
        )
    if parts.username is not None or parts.password is not None:
        raise InsecureUpstream(
            f"git remote {name!r} has credentials in its URL",
            hint="remove user and password from the URL; the credential belongs in token_ref",
        )
    if not parts.hostname or parts.path.strip("/") == "":
        raise InsecureUpstream(
            f"git remote {name!r}: the upstream needs an https:// URL with a host and a repository path",
            hint="write the repository's https:// URL, like https://github.com/org/repo.git",
        )


def gate_remote(plan_remote: object, waivers: Sequence[FindingWaiver] = (), username: str = DEFAULT_USERNAME) -> GateRemote:
    """A ``GateRemote`` from a ``bottle.core.plan.GitRemotePlan`` (name, upstream, token_env, protected, allow).

    ``InsecureUpstream`` if the upstream is not an https URL (``check_upstream``).
    """
    check_upstream(getattr(plan_remote, "name"), getattr(plan_remote, "upstream"))
    return GateRemote(
        name=getattr(plan_remote, "name"),
        upstream=getattr(plan_remote, "upstream"),
        token_env=getattr(plan_remote, "token_env"),
        protected=tuple(getattr(plan_remote, "protected", ())),
        allow=tuple(getattr(plan_remote, "allow", ())),
        username=username,
        waivers=tuple(waivers),
    )


def encode_gate_config(remotes: Iterable[GateRemote]) -> str:
    """The value of ``BOTTLE_GIT_REMOTES``: compact JSON, no secrets."""
    return msgspec.json.encode(GateConfig(tuple(remotes))).decode()


def decode_gate_config(text: str | bytes) -> GateConfig:
    """Parse and check ``BOTTLE_GIT_REMOTES``; ``ValueError`` says what is wrong (never quoting a value)."""
    try:
        config = msgspec.json.decode(text, type=GateConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{CONFIG_ENV} is not a valid remote list: {exc}") from None
    except msgspec.DecodeError:
        raise ValueError(f"{CONFIG_ENV} is not JSON") from None
    seen: set[str] = set()
    for index, remote in enumerate(config.remotes):
        if not _REMOTE_NAME.match(remote.name) or remote.name.endswith(".git"):
            raise ValueError(f"{CONFIG_ENV}: remote {index} has an invalid name (letters, digits, '.', '_', '-')")
        if remote.name in seen:
            raise ValueError(f"{CONFIG_ENV}: remote {remote.name!r} appears twice")
        seen.add(remote.name)
        try:
            check_upstream(remote.name, remote.upstream)
        except InsecureUpstream as exc:
            raise ValueError(f"{CONFIG_ENV}: {exc}") from None
        if not re.match(r"^[A-Z_][A-Z0-9_]*$", remote.token_env):
            raise ValueError(f"{CONFIG_ENV}: remote {remote.name!r} has an invalid token_env")
        if not remote.username or any(c in remote.username for c in "\n\r\0"):
            raise ValueError(f"{CONFIG_ENV}: remote {remote.name!r} has an invalid username")
    return config


# -- addresses ----------------------------------------------------------------


def repo_path(name: str, root: str = GATE_ROOT) -> str:
    """The gate's bare repository of remote ``name``: ``<root>/<name>.git``."""
    if not _REMOTE_NAME.match(name):
        raise ValueError(f"{name!r} is not a remote name")
    return f"{root.rstrip('/')}/{name}.git"


def gate_url(name: str, host: str = GATE_HOST, port: int = GATE_PORT) -> str:
    """The URL the agent's git uses for remote ``name``: ``http://git-gate:8080/<name>.git``."""
    return f"http://{host}:{port}/{name}.git"


def parse_gate_path(path: str) -> tuple[str, str] | None:
    """(remote name, service) of a smart-HTTP request path, or None for anything else.

    Accepts ``/<name>.git/<service>`` and ``/<name>/<service>`` with service
    ``info/refs``, ``git-upload-pack`` or ``git-receive-pack``; the query
    must already be split off. Repeated slashes are tolerated; ``..``,
    percent-escapes and dumb-protocol paths (``objects/...``, ``HEAD``) are not.
    """
    if "%" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return None
    repo, rest = parts[0], "/".join(parts[1:])
    if rest not in _SERVICES:
        return None
    name = repo[: -len(".git")] if repo.endswith(".git") else repo
    if not _REMOTE_NAME.match(name) or name.endswith(".git"):
        return None
    return name, rest


def upstream_forms(upstream: str) -> tuple[str, ...]:
    """The spellings of ``upstream`` an agent may use: with and without ``.git``; and ssh forms when on port 22/443.

    ``https://host/org/repo.git`` gives ``https://host/org/repo.git``,
    ``https://host/org/repo``, ``ssh://git@host/org/repo.git``,
    ``ssh://git@host/org/repo``, ``git@host:org/repo.git`` and ``git@host:org/repo``.
    """
    parts = urllib.parse.urlsplit(upstream)
    host = (parts.hostname or "").lower()
    netloc = host if parts.port in (None, 443) else f"{host}:{parts.port}"
    path = parts.path.rstrip("/")
    bare = path[: -len(".git")] if path.endswith(".git") else path
    forms = [f"https://{netloc}{bare}.git", f"https://{netloc}{bare}"]
    if parts.port in (None, 443):
        rel = bare.lstrip("/")
        forms += [f"ssh://git@{host}/{rel}.git", f"ssh://git@{host}/{rel}", f"git@{host}:{rel}.git", f"git@{host}:{rel}"]
    return tuple(dict.fromkeys(forms))


def _config_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gitconfig_rewrites(remotes: Iterable[GateRemote], host: str = GATE_HOST, port: int = GATE_PORT) -> str:
    """The ``~/.gitconfig`` text that sends every spelling of each upstream to the gate.

    One ``[url "<gate>"]`` section per remote with an ``insteadOf`` per
    spelling (``upstream_forms``). ``insteadOf`` matches prefixes, longest
    first: a URL that merely starts with a brokered one
    (``.../repo-tools.git`` beside ``.../repo``) is sent to the gate too and
    fails there with "no brokered remote". Empty string for no remotes.
    """
    blocks: list[str] = []
    for remote in remotes:
        lines = [f"[url {_config_quote(gate_url(remote.name, host, port))}]"]
        lines += [f"\tinsteadOf = {_config_quote(form)}" for form in upstream_forms(remote.upstream)]
        blocks.append("\n".join(lines))
    if not blocks:
        return ""
    return "# bottle: brokered remotes go through the git gate\n" + "\n".join(blocks) + "\n"


# -- the pre-receive hook's input ---------------------------------------------


def parse_pre_receive(text: str | bytes) -> list[PushRefUpdate]:
    """The ref updates of a pre-receive hook's stdin (``<old> <new> <ref>`` per line).

    Blank lines are skipped. ``ValueError`` names the line number of a
    malformed line (object names must be 40 or 64 lowercase hex digits).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    updates: list[PushRefUpdate] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ", 2)
        if len(fields) != 3 or not _SHA.match(fields[0]) or not _SHA.match(fields[1]) or not fields[2]:
            raise ValueError(f"pre-receive input line {number} is not '<old> <new> <ref>'")
        updates.append(PushRefUpdate(ref=fields[2], old_sha=fields[0], new_sha=fields[1]))
    return updates


# -- what a push adds -----------------------------------------------------------

# The git log the hook runs over the new commits (followed by the new tips,
# ``--not --all``). Each commit starts with ``\0commit <sha>`` on a line of
# its own; the patch follows. The message is not in it (``scan_object``
# reads that from the raw object): text a committer controls never sits
# where the splitter looks for record boundaries. ``--text`` scans binary
# files too; ``--cc`` shows merges as combined diffs, so lines a merge takes
# from a parent are not new. No textconv or external diff, no colour, fixed
# prefixes, whatever the repository's configuration says.
PUSH_LOG_ARGS = (
    "log",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--text",
    "--cc",
    "--patch",
    "--no-abbrev",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--format=%x00commit %H",
)
_RECORD = b"\0commit "


class PushFinding(msgspec.Struct, frozen=True, omit_defaults=True):
    """A secret a push would add, by position. Holds no part of the secret.

    ``where`` is ``file`` (``path``:``line`` in the new version of the file),
    ``path`` (the file's name itself, line 0), ``message`` (line of the
    commit message), ``header`` (an author/committer/tagger line) or
    ``ref`` (the name of a pushed ref, in ``path``). ``path`` is redacted
    if a secret is part of it.
    """

    commit: str
    where: Literal["file", "path", "message", "header", "ref"]
    path: str
    line: int
    rule: str
    encoding: str = "raw"
    slot: str | None = None

    def describe(self) -> str:
        """``file:line: rule (commit abcdef12)``: a secret-free line for people and audit logs."""
        rule = self.rule if self.slot is None else f"{self.rule} {self.slot}"
        if self.encoding != "raw":
            rule = f"{rule} ({self.encoding}-encoded)"
        short = self.commit[:12]
        if self.where == "file":
            return f"{self.path}:{self.line}: {rule} (commit {short})"
        if self.where == "path":
            return f"{self.path}: {rule} in the file name (commit {short})"
        if self.where == "message":
            return f"commit message of {short}, line {self.line}: {rule}"
        if self.where == "ref":
            return f"ref name {self.path}: {rule}"
        return f"{self.path} of {short}, line {self.line}: {rule}"


class LogSplitter:
    """Cuts a stream of ``git log`` output (``PUSH_LOG_ARGS``) into (commit, patch) records.

    ``feed`` returns the records completed by a chunk; ``finish`` the last.
    Memory: the largest single commit's patch plus one chunk. Every patch
    starts with the newline that ends its header, so each of its lines,
    the first included, follows a newline. ``ValueError`` if the stream is
    not ``git log`` output of that shape.
    """

    _BOUNDARY = b"\n" + _RECORD

    def __init__(self) -> None:
        self._buf = b""
        self._searched = 0  # _buf[:_searched] holds no boundary

    def _record(self, data: bytes) -> tuple[str, bytes]:
        nl = data.find(b"\n")
        header = data[len(_RECORD):nl if nl >= 0 else len(data)]
        sha = header.decode("ascii", "replace")
        if not data.startswith(_RECORD) or not _SHA.match(sha):
            raise ValueError("git log output is not a sequence of '\\0commit <sha>' records")
        return sha, data[nl:] if nl >= 0 else b"\n"

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[tuple[str, bytes]] = []
        pos = 0
        while True:
            idx = buf.find(self._BOUNDARY, max(pos, self._searched))
            if idx < 0:
                break
            out.append(self._record(buf[pos:idx + 1]))
            pos = idx + 1
        self._buf = buf[pos:]
        self._searched = max(0, len(self._buf) - len(self._BOUNDARY) + 1)
        return out

    def finish(self) -> list[tuple[str, bytes]]:
        rest, self._buf, self._searched = self._buf, b"", 0
        return [self._record(rest)] if rest else []


_HUNK = re.compile(rb"(@@+) (?:-[0-9]+(?:,[0-9]+)? )+\+([0-9]+)(?:,[0-9]+)? @@+")
_GIT_HEADER = re.compile(rb"diff --git a/(.*) b/(.*)")
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}


def _unquote_path(raw: bytes) -> str:
    """A path as git prints it: plain, or C-quoted with octal escapes for odd bytes."""
    # Git ends an unquoted name that holds a space with a tab in ---/+++ lines.
    raw = raw.rstrip(b"\r").removesuffix(b"\t")
    if not (raw.startswith(b'"') and raw.endswith(b'"') and len(raw) >= 2):
        return raw.decode("utf-8", "replace")
    body, out, i = raw[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == 0x5C and i + 1 < len(body):
            nxt = chr(body[i + 1])
            if nxt in "01234567" and i + 4 <= len(body):
                out.append(int(body[i + 1:i + 4], 8) & 0xFF)
                i += 4
                continue
            out += _C_ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def _strip_prefix(path: str, prefix: str) -> str:
    return path[len(prefix):] if path.startswith(prefix) else path


def _file_path(patch: bytes, header_start: int, header_end: int) -> str:
    """The new path of the file whose header spans [header_start, header_end)."""
    header = patch[header_start:header_end]
    for line in header.split(b"\n"):
        if line.startswith(b"+++ "):
            name = _unquote_path(line[4:])
            if name != "/dev/null":
                return _strip_prefix(name, "b/")
    for line in header.split(b"\n"):
        for key in (b"rename to ", b"copy to "):
            if line.startswith(key):
                return _unquote_path(line[len(key):])
    first = header.split(b"\n", 1)[0]
    if first.startswith(b"diff --cc ") or first.startswith(b"diff --combined "):
        return _unquote_path(first.split(b" ", 2)[2])
    m = _GIT_HEADER.fullmatch(first.rstrip(b"\r"))
    if m:
        return _unquote_path(m.group(2))
    return "(unknown file)"


# Lines of a file header that carry the *new* name of a file.
_RENAME_LINES = (b"rename to ", b"copy to ")
# Header lines that name the file as it is after the commit: new text only
# when the file is new, renamed or copied.
_NAME_LINES = (b"+++ ", b"diff --git ", b"diff --cc ", b"diff --combined ", *_RENAME_LINES)
_NEW_NAME_MARKS = (b"\nnew file mode ", b"\nrename to ", b"\ncopy to ")


class _PatchIndex:
    """Places offsets of one patch as (where, path, line); offsets must come in increasing order.

    New text is an added line of a hunk (every column ``+`` in a combined
    diff) or the new name of a file in its header; anything else (removed
    and context lines, old names, hunk headers) gives None. Git starts no
    line of content with ``diff `` or ``@@`` (content lines carry a
    +/-/space prefix), so searching back for those finds the file and hunk.
    The current file and hunk are remembered, so placing many findings in
    one large hunk costs one pass over it, not one per finding.
    """

    def __init__(self, patch: bytes) -> None:
        self.patch = patch
        self._file: tuple[int, int, int, str] | None = None  # header start, first hunk, next file, path
        self._hunk: tuple[int, int, int, int] | None = None  # header start, header end, columns, new start
        self._counted = (0, 0)  # (line start counted up to, new-file lines before it in the hunk)

    def _file_at(self, ls: int) -> tuple[int, int, int, str] | None:
        patch = self.patch
        if self._file is not None and self._file[0] < ls <= self._file[2]:
            return self._file
        # The end bound lets the header that starts this very line count.
        fh = patch.rfind(b"\ndiff ", 0, ls + len(b"diff "))
        if fh < 0:
            return None
        next_file = patch.find(b"\ndiff ", fh + 1)
        if next_file < 0:
            next_file = len(patch)
        first_hunk = patch.find(b"\n@@", fh + 1, next_file)
        if first_hunk < 0:
            first_hunk = next_file
        self._file = (fh, first_hunk, next_file, _file_path(patch, fh + 1, first_hunk))
        self._hunk = None
        return self._file

    def _hunk_at(self, ls: int) -> tuple[int, int, int, int] | None:
        patch = self.patch
        hunk = self._hunk
        if hunk is None or ls < self._counted[0] or patch.find(b"\n@@", self._counted[0], ls + 2) >= 0:
            hh = patch.rfind(b"\n@@", 0, ls + 2)
            header_end = patch.find(b"\n", hh + 1)
            m = _HUNK.match(patch, hh + 1, header_end)
            if m is None:
                self._hunk = None
                return None
            hunk = self._hunk = (hh, header_end, len(m.group(1)) - 1, int(m.group(2)))
            self._counted = (header_end, 0)
        return hunk

    def place(self, pos: int) -> tuple[str, str, int] | None:
        patch = self.patch
        ls = patch.rfind(b"\n", 0, pos) + 1
        file = self._file_at(ls)
        if file is None:
            return None  # before the first file: nothing there is content
        fh, first_hunk, _next, path = file
        if ls <= first_hunk:
            # In the file's header: only a new name is the committer's text
            # (an empty new file has no +++ line; its name is on the diff line).
            if patch.startswith(_RENAME_LINES, ls):
                return "path", path, 0
            if patch.startswith(_NAME_LINES, ls) and any(patch.find(m, fh, first_hunk) >= 0 for m in _NEW_NAME_MARKS):
                return "path", path, 0
            return None
        hunk = self._hunk_at(ls)
        if hunk is None or ls == hunk[0] + 1:
            return None  # the hunk header; its trailing text is old context
        _hh, _end, columns, start = hunk
        counted_to, before = self._counted
        if columns == 1:
            before += patch.count(b"\n+", counted_to, ls) + patch.count(b"\n ", counted_to, ls)
        else:
            for row in patch[counted_to + 1:ls - 1].split(b"\n") if ls - 1 > counted_to else ():
                cols = row[:columns]
                if len(cols) == columns and b"-" not in cols and not row.startswith(b"\\"):
                    before += 1
        # The line at ls itself is counted from the next position on.
        self._counted = (ls - 1, before)
        if patch[ls:ls + columns] != b"+" * columns:
            return None
        return "file", path, start + before


def scan_patch(scanner: SecretScanner, commit: str, patch: bytes) -> list[PushFinding]:
    """Secrets on the lines a commit's patch adds (and in new file names), as file:line findings.

    ``patch`` is one ``LogSplitter`` record (it starts with a newline). The
    whole patch is scanned in one pass and findings on removed or context
    lines, or in old names, are dropped: those bytes are upstream already.
    Each (path, line, rule) is reported once. Paths are redacted.
    """
    if not patch.startswith(b"\n"):
        patch = b"\n" + patch
    out: dict[tuple[str, str, int, str, str | None], PushFinding] = {}
    index = _PatchIndex(patch)
    for f in sorted(scanner.scan(patch, "patch"), key=lambda f: f.start):
        place = index.place(f.start)
        if place is None:
            continue
        where, path, line = place
        key = (where, path, line, f.kind, f.slot)
        if key not in out:
            out[key] = PushFinding(commit, where, scanner.redact(path), line, f.kind, f.encoding, f.slot)  # type: ignore[arg-type]
    return list(out.values())


def scan_object(scanner: SecretScanner, sha: str, raw: bytes) -> list[PushFinding]:
    """Secrets in a raw commit or tag object (``git cat-file`` output): headers and message.

    A finding in a header line (author, committer, tagger, ...) is
    ``where="header"``; in the message, ``where="message"`` with the line
    number counted from the message's first line.
    """
    blank = raw.find(b"\n\n")
    body_start = len(raw) if blank < 0 else blank + 2
    out: dict[tuple[str, int, str, str | None], PushFinding] = {}
    for f in scanner.scan(raw, "object"):
        if f.start >= body_start:
            where, line = "message", raw.count(b"\n", body_start, f.start) + 1
            label = "(commit message)"
        else:
            where, line = "header", raw.count(b"\n", 0, f.start) + 1
            label = "(object header)"
        key = (where, line, f.kind, f.slot)
        if key not in out:
            out[key] = PushFinding(sha, where, label, line, f.kind, f.encoding, f.slot)  # type: ignore[arg-type]
    return list(out.values())


def scan_refs(scanner: SecretScanner, updates: Iterable[PushRefUpdate]) -> list[PushFinding]:
    """Secrets in the names of pushed refs (a branch name reaches the upstream too)."""
    out: list[PushFinding] = []
    for u in updates:
        for f in scanner.scan(u.ref, "ref"):
            out.append(PushFinding(u.new_sha, "ref", scanner.redact(u.ref), 0, f.kind, f.encoding, f.slot))
    return out


# -- the verdict ----------------------------------------------------------------


class GateVerdict(msgspec.Struct, frozen=True):
    """Whether a push may go upstream, and why.

    ``rule`` is ``ok``, ``secret-found``, or the ``gitpolicy`` rule of the
    first refused ref update. ``findings`` are the unwaived ones (any of
    them refuses the push); ``waived`` those a manifest rule let through.
    """

    accepted: bool
    rule: str
    decisions: tuple[PushDecision, ...]
    findings: tuple[PushFinding, ...]
    waived: tuple[PushFinding, ...] = ()


def decide_gate_push(
    updates: Sequence[PushRefUpdate],
    rules: BranchRules,
    is_fast_forward: Mapping[str, bool],
    findings: Iterable[PushFinding],
    waivers: Sequence[FindingWaiver] = (),
    peeled_types: Mapping[str, str] | None = None,
) -> GateVerdict:
    """The gate's verdict on a push: every ref update allowed by ``rules`` and no unwaived finding.

    A push is accepted or refused as a whole. Branch rules are reported
    first (a force-push to a protected branch is refused even if clean).
    ``peeled_types`` gives, per ref, the type of the object it points at
    once tags are peeled: a ref to a blob or tree is refused
    (``not-a-commit``), because the scan reads what commits add and such a
    ref would carry content past it. A ref missing from ``peeled_types``
    counts as a commit. A finding is waived only by a ``FindingWaiver``
    from the manifest.
    """
    types = peeled_types or {}
    decisions = tuple(
        PushDecision(
            d.ref, False, RULE_NOT_COMMIT,
            f"{d.ref} points at a {types[d.ref]}; only commits (and tags of commits) go through the gate",
        )
        if d.allowed and types.get(d.ref, "commit") != "commit"
        else d
        for d in decide_push(updates, rules, is_fast_forward)
    )
    kept: list[PushFinding] = []
    waived: list[PushFinding] = []
    for finding in findings:
        (waived if any(w.covers(finding) for w in waivers) else kept).append(finding)
    refused = next((d for d in decisions if not d.allowed), None)
    if refused is not None:
        rule = refused.rule
    elif kept:
        rule = RULE_SECRET
    else:
        rule = RULE_OK
    accepted = push_allowed(decisions) and not kept and bool(decisions)
    return GateVerdict(accepted, rule, decisions, tuple(kept), tuple(waived))


_MAX_LISTED = 20


def verdict_message(verdict: GateVerdict, remote: str, scanner: SecretScanner | None = None) -> str:
    """What the agent's ``git push`` prints (as ``remote:`` lines) for a verdict.

    Findings are positions, never secrets; ref names come from the agent,
    so with ``scanner`` the finished text is redacted once more.
    """
    text = _verdict_text(verdict, remote)
    return scanner.redact(text) if scanner is not None else text


def _verdict_text(verdict: GateVerdict, remote: str) -> str:
    if verdict.accepted:
        lines = [f"bottle git gate: push to {remote} passed the secret scan and branch rules; sending it upstream"]
        lines += [f"  waived by the manifest: {f.describe()}" for f in verdict.waived[:_MAX_LISTED]]
        return "\n".join(lines) + "\n"
    lines = [f"bottle git gate: push to {remote} REFUSED; nothing was sent upstream"]
    for d in verdict.decisions:
        if not d.allowed:
            lines.append(f"  {d.ref}: {d.rule}: {d.reason}")
    if verdict.findings:
        lines.append(f"  secrets in the pushed commits ({len(verdict.findings)}):")
        lines += [f"    {f.describe()}" for f in verdict.findings[:_MAX_LISTED]]
        if len(verdict.findings) > _MAX_LISTED:
            lines.append(f"    ... and {len(verdict.findings) - _MAX_LISTED} more")
        lines.append(
            "  remove them from every commit of the push (git commit --amend, git rebase -i) and push again;"
        )
        lines.append(
            "  a finding that is not a secret can be waived only by a person, in the manifest "
            "(bottle.git[].allow_findings: path + rule)"
        )
    if not verdict.decisions:
        lines.append("  the push updates no refs")
    return "\n".join(lines) + "\n"

"""The gate's pre-receive hook: scan what a push adds, apply the branch rules, push upstream.

``git receive-pack`` runs the hook (``core.hooksPath``) in the gate's bare
repository with the pushed objects in quarantine and the ref updates on
stdin. The hook process itself holds no credential and no settings (its
environment has no ``BOTTLE_*`` variable): ``main`` only hands the push to
the gate's server over its unix socket (``bottle.sidecars.git_gate.handoff``),
and the server runs ``serve_push`` here. That gathers facts with git —
fast-forwardness, the new commits' patches (``PUSH_LOG_ARGS``) and raw
objects, read through the quarantine — and leaves every decision to
``bottle.core.gitgate``. When the push is accepted it sends the same ref
updates to the real upstream with the real credential and relays the
upstream's verdict; the gate's refs move only if the upstream took them.
Whatever it says reaches the agent as ``remote:`` lines and is redacted
first. Every push gets one audit line. Any failure refuses the push.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TextIO

from bottle.core.gitgate import (
    PUSH_LOG_ARGS,
    GateRemote,
    GateVerdict,
    LogSplitter,
    PushFinding,
    decide_gate_push,
    parse_pre_receive,
    scan_object,
    scan_patch,
    scan_refs,
    verdict_message,
)
from bottle.core.gitpolicy import PushRefUpdate
from bottle.core.secretscan import SecretScanner
from bottle.sidecars.git_gate.gitcmd import (
    GateError,
    GateSettings,
    audit,
    audit_writable,
    last_line,
    local_env,
    repo_lock,
    run,
    upstream_env,
)
from bottle.sidecars.git_gate.handoff import QUARANTINE, PushRequest, Say, hand_over, request_from_hook

RULE_UPSTREAM_REJECTED = "upstream-rejected"
RULE_GATE_ERROR = "gate-error"
_CHUNK = 1 << 20
# The repository and what receive-pack hands its hooks so they can read the quarantined objects.
_QUARANTINE = ("GIT_DIR", *QUARANTINE)


def _is_null(sha: str) -> bool:
    return set(sha) == {"0"}


def _git_env(settings: GateSettings, environ: Mapping[str, str]) -> dict[str, str]:
    env = local_env(settings, environ)
    env.update({k: environ[k] for k in _QUARANTINE if k in environ})
    return env


def fast_forwards(git_dir: str, updates: Sequence[PushRefUpdate], env: Mapping[str, str]) -> dict[str, bool]:
    """For each update of an existing ref to a new commit: is ``new`` a descendant of ``old``?"""
    out: dict[str, bool] = {}
    for u in updates:
        if u.is_creation or u.is_deletion:
            continue
        result = run(["git", "--git-dir", git_dir, "merge-base", "--is-ancestor", u.old_sha, u.new_sha], env, check=False)
        if result.returncode not in (0, 1):
            raise GateError(f"cannot tell whether {u.ref} is a fast-forward: {last_line(result.stderr)}")
        out[u.ref] = result.returncode == 0
    return out


def peeled_types(git_dir: str, updates: Sequence[PushRefUpdate], env: Mapping[str, str]) -> dict[str, str]:
    """For each update to an object: the type of what it points at once tags are peeled."""
    targets = [u for u in updates if not u.is_deletion]
    if not targets:
        return {}
    query = "".join(f"{u.new_sha}^{{}}\n" for u in targets).encode()
    result = run(["git", "--git-dir", git_dir, "cat-file", "--batch-check=%(objecttype)"], env, input=query)
    types = result.stdout.decode("ascii", "replace").split()
    if len(types) != len(targets):
        raise GateError("git cat-file gave an unexpected answer")
    return {u.ref: t for u, t in zip(targets, types)}


def new_commits(git_dir: str, tips: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Commits reachable from ``tips`` and from no ref the gate already has (upstream's state)."""
    if not tips:
        return []
    result = run(["git", "--git-dir", git_dir, "rev-list", *tips, "--not", "--all"], env)
    return result.stdout.decode("ascii").split()


def read_objects(git_dir: str, shas: Sequence[str], env: Mapping[str, str]) -> Iterable[tuple[str, str, bytes]]:
    """(sha, type, raw content) of each object, through one ``git cat-file --batch``."""
    if not shas:
        return
    proc = subprocess.Popen(
        ["git", "--git-dir", git_dir, "cat-file", "--batch"],
        env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    # Written from a thread: with many objects both pipes fill up otherwise.
    writer = threading.Thread(target=_write_all, args=(proc.stdin, "".join(f"{s}\n" for s in shas).encode()), daemon=True)
    writer.start()
    try:
        for _ in shas:
            header = proc.stdout.readline().split()
            if len(header) != 3:
                raise GateError("git cat-file gave an unexpected answer")
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)
            yield header[0].decode(), header[1].decode(), data
    finally:
        proc.stdout.close()
        proc.wait()
        writer.join()


def _write_all(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except OSError:
        pass


def scan_push(
    git_dir: str,
    updates: Sequence[PushRefUpdate],
    scanner: SecretScanner,
    env: Mapping[str, str],
) -> list[PushFinding]:
    """Every finding in what the push adds: ref names, new commits' objects and patches, new tag objects."""
    findings = scan_refs(scanner, updates)
    tips = list(dict.fromkeys(u.new_sha for u in updates if not u.is_deletion))
    commits = new_commits(git_dir, tips, env)
    for sha, _kind, raw in read_objects(git_dir, commits, env):
        findings += scan_object(scanner, sha, raw)
    # Annotated tags, and the tags they point at in turn, carry messages too.
    pending, seen = list(tips), set()
    while pending:
        batch = [s for s in pending if s not in seen]
        seen.update(batch)
        pending = []
        for sha, kind, raw in read_objects(git_dir, batch, env):
            if kind == "tag":
                findings += scan_object(scanner, sha, raw)
                target = raw.split(b"\n", 1)[0]
                if target.startswith(b"object "):
                    pending.append(target[len(b"object "):].decode("ascii", "replace"))
    if commits:
        with tempfile.TemporaryFile() as errors:
            findings += _scan_log(git_dir, tips, scanner, env, errors)
    return findings


def _scan_log(git_dir: str, tips: Sequence[str], scanner: SecretScanner, env: Mapping[str, str], errors: IO[bytes]) -> list[PushFinding]:
    """``scan_patch`` over every new commit's patch, streamed from one ``git log`` (stderr to ``errors``)."""
    findings: list[PushFinding] = []
    proc = subprocess.Popen(
        ["git", "--git-dir", git_dir, *PUSH_LOG_ARGS, *tips, "--not", "--all"],
        env=dict(env), stdout=subprocess.PIPE, stderr=errors,
    )
    assert proc.stdout is not None
    try:
        splitter = LogSplitter()
        while chunk := proc.stdout.read(_CHUNK):
            for sha, patch in splitter.feed(chunk):
                findings += scan_patch(scanner, sha, patch)
        for sha, patch in splitter.finish():
            findings += scan_patch(scanner, sha, patch)
    finally:
        proc.stdout.close()
        code = proc.wait()
    if code != 0:
        errors.seek(0)
        raise GateError(f"git log failed: {last_line(errors.read())}")
    return findings


def upstream_push_argv(remote: GateRemote, updates: Sequence[PushRefUpdate], fast_forward: Mapping[str, bool]) -> list[str]:
    """``git push`` of exactly these updates, each leased on the value the gate saw upstream.

    A fast-forward or a creation is pushed without force (the upstream
    checks it too); a rewind or deletion the rules allowed is forced, but
    only if the upstream still holds what the agent rewrote.
    """
    argv = ["git", "push", "--porcelain", "--no-verify", "--no-recurse-submodules"]
    if len(updates) > 1:
        argv.append("--atomic")
    refspecs: list[str] = []
    for u in updates:
        if u.is_deletion:
            argv.append(f"--force-with-lease={u.ref}:{u.old_sha}")
            refspecs.append(f":{u.ref}")
        elif u.is_creation:
            refspecs.append(f"{u.new_sha}:{u.ref}")
        elif fast_forward.get(u.ref, False):
            refspecs.append(f"{u.new_sha}:{u.ref}")
        else:
            argv.append(f"--force-with-lease={u.ref}:{u.old_sha}")
            refspecs.append(f"+{u.new_sha}:{u.ref}")
    return argv + [remote.upstream, *refspecs]


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _say(text: str, scanner: SecretScanner, say: Say) -> None:
    say(scanner.redact(text))


def _summary(updates: Sequence[PushRefUpdate]) -> str:
    def short(sha: str) -> str:
        return "(none)" if _is_null(sha) else sha[:12]

    return "; ".join(f"{u.ref} {short(u.old_sha)}..{short(u.new_sha)}" for u in updates)


def handle_push(settings: GateSettings, remote: GateRemote, stdin: bytes, environ: Mapping[str, str],
                say: Say = _stderr) -> int:
    """Decide, push upstream and audit one push; the hook's exit code (0 lets the gate's refs move).

    ``environ`` holds ``GIT_DIR`` and the quarantine variables of the push;
    everything the agent should read goes to ``say``, redacted.
    """
    scanner = settings.scanner()
    git_dir = environ.get("GIT_DIR", settings.repo(remote))
    env = _git_env(settings, environ)
    updates: list[PushRefUpdate] = []
    try:
        # A push nobody could audit does not leave (the guard fails closed the same way).
        audit_writable(settings)
        updates = parse_pre_receive(stdin)
        ff = fast_forwards(git_dir, updates, env)
        types = peeled_types(git_dir, updates, env)
        findings = scan_push(git_dir, updates, scanner, env)
        verdict = decide_gate_push(updates, remote.branch_rules(), ff, findings, remote.waivers, types)
    except Exception as exc:  # noqa: BLE001 - any failure refuses the push, with one line, no traceback
        detail = str(exc) if isinstance(exc, (GateError, ValueError, OSError)) else f"internal error ({type(exc).__name__})"
        _say(f"bottle git gate: push to {remote.name} REFUSED; nothing was sent upstream\n  gate error: {detail}\n", scanner, say)
        audit(settings, scanner, event="push", remote=remote, allow=False, rule=RULE_GATE_ERROR,
              reason=f"{_summary(updates)}: {detail}")
        return 1
    _say(verdict_message(verdict, remote.name, scanner), scanner, say)
    if not verdict.accepted:
        _audit_verdict(settings, scanner, remote, updates, verdict, allow=False, rule=verdict.rule, note="refused by the gate",
                       say=say)
        return 1
    return _push_upstream(settings, remote, updates, ff, verdict, scanner, environ, say)


def _audit_verdict(settings: GateSettings, scanner: SecretScanner, remote: GateRemote, updates: Sequence[PushRefUpdate],
                   verdict: GateVerdict, *, allow: bool, rule: str, note: str, say: Say) -> None:
    described = [f.describe() for f in verdict.findings] + [f"waived: {f.describe()}" for f in verdict.waived]
    refused = [f"{d.ref}: {d.rule}" for d in verdict.decisions if not d.allowed]
    reason = f"{_summary(updates)}: {note}" + (f" ({', '.join(refused)})" if refused else "")
    if not audit(settings, scanner, event="push", remote=remote, allow=allow, rule=rule, reason=reason, findings=described):
        _say("bottle git gate: warning: the audit log could not be written\n", scanner, say)


def _push_upstream(settings: GateSettings, remote: GateRemote, updates: Sequence[PushRefUpdate], ff: Mapping[str, bool],
                   verdict: GateVerdict, scanner: SecretScanner, environ: Mapping[str, str], say: Say) -> int:
    try:
        env = upstream_env(settings, remote, environ)
    except GateError as exc:
        _say(f"bottle git gate: push to {remote.name} not sent: {exc}\n", scanner, say)
        _audit_verdict(settings, scanner, remote, updates, verdict, allow=False, rule=RULE_GATE_ERROR, note=str(exc), say=say)
        return 1
    env.update({k: environ[k] for k in _QUARANTINE if k in environ})
    argv = upstream_push_argv(remote, updates, ff)
    git_dir = environ.get("GIT_DIR", settings.repo(remote))
    with repo_lock(settings.repo(remote)):
        result = subprocess.run(["git", "--git-dir", git_dir, *argv[1:]], env=env, capture_output=True, check=False)
    lines = (result.stderr + result.stdout).decode("utf-8", "replace").splitlines()
    relayed = "".join(f"  upstream: {line}\n" for line in lines if line.strip())
    if result.returncode == 0:
        _say(f"bottle git gate: {remote.upstream} accepted the push\n{relayed}", scanner, say)
        _audit_verdict(settings, scanner, remote, updates, verdict, allow=True, rule="ok", note="pushed upstream", say=say)
        return 0
    _say(f"bottle git gate: {remote.upstream} REFUSED the push (its own answer follows); the gate's copy is unchanged\n"
         f"{relayed}", scanner, say)
    _audit_verdict(settings, scanner, remote, updates, verdict, allow=False, rule=RULE_UPSTREAM_REJECTED,
                   note=f"upstream refused: {last_line(result.stderr)}", say=say)
    return 1


def remote_for(settings: GateSettings, git_dir: str) -> GateRemote | None:
    name = os.path.basename(os.path.abspath(git_dir).rstrip("/"))
    if name.endswith(".git"):
        name = name[: -len(".git")]
    return settings.config.remote(name)


def _within(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def serve_push(settings: GateSettings, request: PushRequest, inherit: Mapping[str, str], say: Say) -> int:
    """The server's answer to a hook: ``handle_push`` for the brokered remote whose repository ``request`` names.

    Refuses (exit 1, one line to ``say``) a repository that is not one of
    the gate's, or quarantine paths outside it. ``inherit`` is the server's
    own environment (only ``PATH`` and the like are kept from it).
    """
    remote = remote_for(settings, request.git_dir)
    root = os.path.realpath(settings.repo(remote)) if remote is not None else ""
    if remote is None or os.path.realpath(request.git_dir) != root:
        say("bottle git gate: push refused: this repository is not a brokered remote\n")
        return 1
    paths = [p for key, value in request.env.items()
             for p in (value.split(os.pathsep) if key == "GIT_ALTERNATE_OBJECT_DIRECTORIES" else [value])]
    if not all(p and _within(p, root) for p in paths):
        say("bottle git gate: push refused: receive-pack's quarantine is outside the repository\n")
        return 1
    environ = {**inherit, **request.env, "GIT_DIR": root}
    return handle_push(settings, remote, request.stdin, environ, say)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None,
         stdin: IO[bytes] | None = None, err: TextIO | None = None) -> int:
    """The hook process: hand the push to the server at the socket named by ``argv[0]``; the server's exit code."""
    args = sys.argv[1:] if argv is None else argv
    env = environ if environ is not None else os.environ
    out = err if err is not None else sys.stderr
    if not args:
        out.write("bottle git gate: push refused: the hook does not know the gate's socket\n")
        return 1
    data = (stdin if stdin is not None else sys.stdin.buffer).read()
    return hand_over(args[0], request_from_hook(env, os.getcwd(), data), out)


if __name__ == "__main__":
    sys.exit(main())

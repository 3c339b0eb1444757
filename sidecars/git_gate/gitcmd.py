"""Running git for the gate: its settings, the upstream's credential, refresh and push.

Every git the gate runs against an upstream gets an environment built here
from scratch: no user or system configuration, no terminal prompts, the
trusted CA bundle, and one credential helper (``bottle.sidecars.git_gate.credential``)
that reads the remote's token from the environment and answers only for
https on the upstream's own host and port. The token is never on a command line, in a
repository's configuration, or in what the gate prints: git's output is
redacted with the scanner that knows the token before anyone sees it.

Container contract (the launch plan sets these):

    BOTTLE_IDENTITY, BOTTLE_ROLE   who this sidecar is (audit lines)
    BOTTLE_GIT_REMOTES             the brokered remotes, JSON (bottle.core.gitgate)
    BOTTLE_GIT_TOKEN_<n>           each remote's credential (its token_env)
    BOTTLE_SECRETS_FILE            optional JSON object of BOTTLE_GIT_TOKEN_<n>
                                   entries, instead of (or on top of) the env
    BOTTLE_EXTRA_CA_FILE           optional PEM bundle trusted for upstream TLS
                                   on top of the system CAs
    BOTTLE_GIT_ROOT                where the bare repositories live (/srv/git)
    BOTTLE_AUDIT_LOG               /var/log/bottle/git-gate.jsonl by default
    BOTTLE_RUNTIME_DIR             scratch space (hook, its socket, empty HOME, CA bundle)
    BOTTLE_LISTEN_PORT             8080 by default
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import msgspec

from bottle.core.audit import audit_record, encode_audit_line
from bottle.core.gitgate import CONFIG_ENV, GATE_ROOT, GateConfig, GateRemote, decode_gate_config, repo_path
from bottle.core.naming import ROLE_GIT_GATE
from bottle.core.secretscan import BrokeredSecret, SecretScanner
from bottle.sidecars._shared import AUDIT_DIR, AuditLog, system_ca_bundle, write_ca_bundle
from bottle.sidecars.git_gate.handoff import HandoffError, check_socket_path

_GIT_TOKEN = re.compile(r"^BOTTLE_GIT_TOKEN_[0-9]+$")
CREDENTIAL_ENV = "BOTTLE_GIT_CREDENTIAL_ENV"
CREDENTIAL_HOST = "BOTTLE_GIT_CREDENTIAL_HOST"
CREDENTIAL_USER = "BOTTLE_GIT_CREDENTIAL_USER"
# Variables a git run against the upstream may inherit; everything else is dropped.
_KEEP = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "TZ")


class GateError(Exception):
    """The gate cannot do what was asked; the message is for the agent and the audit log (no secrets)."""


@dataclass(frozen=True)
class GateSettings:
    """Everything the gate's server reads from its environment (the hook process reads none of it)."""

    identity: str
    role: str
    config: GateConfig
    tokens: Mapping[str, str]
    root: str
    audit_log: str
    runtime_dir: str
    listen_port: int
    extra_ca: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GateSettings:
        """Read and check the environment; ``GateError`` names what is missing or wrong (never a value)."""
        raw = environ.get(CONFIG_ENV)
        if not raw:
            raise GateError(f"{CONFIG_ENV} is not set: the gate has no remotes to broker")
        try:
            config = decode_gate_config(raw)
        except ValueError as exc:
            raise GateError(str(exc)) from None
        port = environ.get("BOTTLE_LISTEN_PORT") or "8080"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise GateError(f"BOTTLE_LISTEN_PORT={port!r} is not a port number")
        role = environ.get("BOTTLE_ROLE") or ROLE_GIT_GATE
        return cls(
            identity=environ.get("BOTTLE_IDENTITY", ""),
            role=role,
            config=config,
            tokens=load_git_tokens(environ),
            root=environ.get("BOTTLE_GIT_ROOT") or GATE_ROOT,
            audit_log=environ.get("BOTTLE_AUDIT_LOG") or f"{AUDIT_DIR}/{role}.jsonl",
            runtime_dir=environ.get("BOTTLE_RUNTIME_DIR") or f"/tmp/bottle-{role}",
            listen_port=int(port),
            extra_ca=environ.get("BOTTLE_EXTRA_CA_FILE") or None,
        )

    def scanner(self) -> SecretScanner:
        """A scanner that knows every credential this gate holds (pushing one is always refused)."""
        return SecretScanner(BrokeredSecret(slot, value) for slot, value in sorted(self.tokens.items()))

    def repo(self, remote: GateRemote) -> str:
        return repo_path(remote.name, self.root)

    @property
    def hooks_dir(self) -> str:
        return os.path.join(self.runtime_dir, "hooks")

    @property
    def home(self) -> str:
        return os.path.join(self.runtime_dir, "home")

    @property
    def hook_socket(self) -> str:
        """Where the server answers its hooks (``bottle.sidecars.git_gate.handoff``)."""
        return os.path.join(self.runtime_dir, "hook.sock")

    @property
    def ca_bundle(self) -> str:
        return os.path.join(self.runtime_dir, "upstream-ca.pem")


def load_git_tokens(environ: Mapping[str, str]) -> dict[str, str]:
    """The credentials by variable: ``BOTTLE_GIT_TOKEN_<n>`` in the environment, then in ``BOTTLE_SECRETS_FILE``.

    ``GateError`` names the file (never a value) when it is unreadable or
    not a JSON object of strings; empty values are left out; other keys in
    the file are ignored (it may be shared with other slots).
    """
    tokens = {k: v for k, v in environ.items() if _GIT_TOKEN.match(k) and v}
    path = environ.get("BOTTLE_SECRETS_FILE")
    if not path:
        return tokens
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as exc:
        raise GateError(f"cannot read the secrets file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise GateError(f"the secrets file {path} is not JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise GateError(f"the secrets file {path} is not a JSON object of strings")
    tokens.update({k: v for k, v in data.items() if _GIT_TOKEN.match(k) and v})
    return tokens


def prepare_runtime(settings: GateSettings, python: str = sys.executable) -> None:
    """Write the hook, an empty HOME and the CA bundle; create and configure every bare repository.

    The hook script names the server's socket on its command line, so the
    hook needs nothing from its environment. Idempotent. ``GateError`` if a
    file cannot be written or a repository cannot be created.
    """
    try:
        check_socket_path(settings.hook_socket)
    except HandoffError as exc:
        raise GateError(str(exc)) from None
    try:
        os.makedirs(settings.hooks_dir, mode=0o755, exist_ok=True)
        os.makedirs(settings.home, mode=0o700, exist_ok=True)
        hook = os.path.join(settings.hooks_dir, "pre-receive")
        with open(hook + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\nexec {shlex.quote(python)} -m bottle.sidecars.git_gate.hook {shlex.quote(settings.hook_socket)}\n")
        os.chmod(hook + ".tmp", 0o755)
        os.replace(hook + ".tmp", hook)
        system = system_ca_bundle()
        if system is not None or settings.extra_ca:
            write_ca_bundle(settings.ca_bundle, system, settings.extra_ca)
    except (OSError, ValueError) as exc:
        raise GateError(f"cannot prepare {settings.runtime_dir}: {exc}") from None
    for remote in settings.config.remotes:
        init_repo(settings, remote)


def init_repo(settings: GateSettings, remote: GateRemote) -> None:
    path = settings.repo(remote)
    env = local_env(settings)
    if not os.path.isdir(os.path.join(path, "objects")):
        run(["git", "init", "--quiet", "--bare", path], env)
    for key, value in (
        ("core.hooksPath", settings.hooks_dir),
        # Pushes come only from the agent over the internal network; the
        # pre-receive hook is what guards them, not HTTP authentication.
        ("http.receivepack", "true"),
        ("receive.fsckObjects", "true"),
        ("receive.denyDeletes", "false"),
        ("receive.denyNonFastForwards", "false"),
        ("uploadpack.allowFilter", "true"),
        ("core.logAllRefUpdates", "false"),
        ("gc.auto", "0"),
    ):
        run(["git", "--git-dir", path, "config", key, value], env)


def local_env(settings: GateSettings, inherit: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for git on the gate's own repositories: no outside configuration."""
    base = inherit if inherit is not None else os.environ
    env = {k: base[k] for k in _KEEP if k in base}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=settings.home,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        # The gate may run as a uid with no passwd entry; git wants a name for reflogs.
        GIT_COMMITTER_NAME="bottle git gate",
        GIT_COMMITTER_EMAIL="git-gate@bottle.invalid",
        GIT_AUTHOR_NAME="bottle git gate",
        GIT_AUTHOR_EMAIL="git-gate@bottle.invalid",
    )
    _set_config(env, [("safe.directory", "*")])
    return env


def _set_config(env: dict[str, str], pairs: Sequence[tuple[str, str]]) -> None:
    """Append ``pairs`` to the ``GIT_CONFIG_*`` command-line configuration in ``env``."""
    start = int(env.get("GIT_CONFIG_COUNT", "0"))
    for i, (key, value) in enumerate(pairs, start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(start + len(pairs))


def upstream_env(
    settings: GateSettings,
    remote: GateRemote,
    inherit: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> dict[str, str]:
    """An environment for git talking to ``remote``'s upstream with its credential.

    The credential helper is configured through ``GIT_CONFIG_*`` variables,
    so no repository configuration ever names it; it is handed the name of
    the token's variable, the host (and port) it may answer for and the user name.
    ``GateError`` if the gate holds no token for the remote.
    """
    token = settings.tokens.get(remote.token_env)
    if not token:
        raise GateError(
            f"the gate holds no credential for remote {remote.name!r} ({remote.token_env} is empty); "
            "set its token_ref on the host and restart the bottle"
        )
    env = local_env(settings, inherit)
    config = [
        ("credential.helper", ""),
        ("credential.helper", f'!"{python}" -m bottle.sidecars.git_gate.credential'),
        ("credential.useHttpPath", "false"),
        ("http.followRedirects", "false"),
        ("protocol.allow", "never"),
        # https only: basic auth over plain http would hand the token to the network.
        ("protocol.https.allow", "always"),
        ("core.askPass", ""),
        # The repositories are written by pushes from the bottle: whatever their
        # config says, git holding the token runs no hook, verifies TLS and
        # talks to the upstream directly.
        ("core.hooksPath", "/dev/null"),
        ("http.sslVerify", "true"),
        ("http.proxy", ""),
    ]
    if os.path.isfile(settings.ca_bundle):
        config.append(("http.sslCAInfo", settings.ca_bundle))
    _set_config(env, config)
    env[remote.token_env] = token
    env[CREDENTIAL_ENV] = remote.token_env
    # host[:port] exactly as git will send it (the helper compares port too).
    env[CREDENTIAL_HOST] = urlsplit(remote.upstream).netloc.lower()
    env[CREDENTIAL_USER] = remote.username
    env["GIT_ASKPASS"] = "/bin/false"
    return env


def run(argv: Sequence[str], env: Mapping[str, str], *, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run git (never through a shell); ``GateError`` with git's last line of stderr when ``check`` and it fails."""
    result = subprocess.run(list(argv), env=dict(env), input=input, capture_output=True, check=False)
    if check and result.returncode != 0:
        raise GateError(f"{' '.join(argv[:2])} failed: {last_line(result.stderr)}")
    return result


def last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@contextmanager
def repo_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on a gate repository (refresh and upstream push never interleave)."""
    fd = os.open(os.path.join(path, "bottle-gate.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def refresh(settings: GateSettings, remote: GateRemote, scanner: SecretScanner) -> None:
    """Make the gate's copy of ``remote`` what the upstream has now (branches, tags, HEAD).

    ``GateError`` with git's redacted last line if the upstream cannot be
    reached or refuses the credential.
    """
    path = settings.repo(remote)
    env = upstream_env(settings, remote)
    with repo_lock(path):
        heads = run(["git", "--git-dir", path, "ls-remote", "--symref", remote.upstream, "HEAD"], env, check=False)
        if heads.returncode != 0:
            raise GateError(f"cannot reach {remote.upstream}: {scanner.redact(last_line(heads.stderr))}")
        fetch = run(
            [
                "git", "--git-dir", path, "fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head",
                remote.upstream, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
            ],
            env,
            check=False,
        )
        if fetch.returncode != 0:
            raise GateError(f"cannot fetch {remote.upstream}: {scanner.redact(last_line(fetch.stderr))}")
        match = re.search(rb"^ref: (refs/heads/\S+)\tHEAD$", heads.stdout, re.MULTILINE)
        if match:
            run(["git", "--git-dir", path, "symbolic-ref", "HEAD", match.group(1).decode()], local_env(settings))


def audit_writable(settings: GateSettings) -> None:
    """``GateError`` unless the audit log can be opened for appending (creating it and its directory)."""
    try:
        AuditLog(settings.audit_log).close()
    except OSError as exc:
        raise GateError(f"the audit log {settings.audit_log} cannot be written ({exc.strerror or exc})") from None


def audit(settings: GateSettings, scanner: SecretScanner, *, event: str, remote: GateRemote, allow: bool,
          rule: str, reason: str, findings: Sequence[str] = ()) -> bool:
    """Append one audit line (redacted); False if it could not be written."""
    parts = urlsplit(remote.upstream)
    record = audit_record(
        now=datetime.now(timezone.utc),
        identity=settings.identity,
        role=settings.role,
        event=event,
        allow=allow,
        rule=rule,
        method="PUSH" if event == "push" else "FETCH",
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=parts.port or 0,
        path=parts.path,
        reason=reason,
        route=remote.name,
    )
    if findings:
        record = msgspec.structs.replace(record, findings=tuple(findings))
    try:
        log = AuditLog(settings.audit_log)
    except OSError as exc:
        print(f"bottle git gate: cannot write the audit log {settings.audit_log}: {exc.strerror or exc}", file=sys.stderr)
        return False
    try:
        return log.write(encode_audit_line(record, scanner))
    finally:
        log.close()

"""What the guard and the egress proxy share besides ``bottle.core``: files and the environment.

No mitmproxy here, so the entrypoints and tests can use it without one.

Container contract (both sidecars; the launch plan sets these):

    BOTTLE_IDENTITY, BOTTLE_ROLE      who this sidecar is (audit lines, paths)
    BOTTLE_TOKEN_<n>                  brokered secrets, one per token slot
    BOTTLE_POLICY_FILE                the policy document (default
                                      /etc/bottle/policy/egress.json); mount its
                                      *directory*, so an atomic rename on the
                                      host is seen (a bind-mounted file keeps
                                      the old inode forever)
    /etc/bottle/ca/<role>.key|.crt    this sidecar's CA
    /var/log/bottle/<role>.jsonl      the audit log (BOTTLE_AUDIT_LOG); the
                                      directory is this role's own
                                      (audit/<role>/ in the state), which no
                                      other container mounts
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

POLICY_DIR = "/etc/bottle/policy"
DEFAULT_POLICY_FILE = f"{POLICY_DIR}/egress.json"
CA_DIR = "/etc/bottle/ca"
AUDIT_DIR = "/var/log/bottle"
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
)
_TOKEN_VAR = re.compile(r"^BOTTLE_TOKEN_[0-9]+$")


class WatchedFile(Generic[T]):
    """A file parsed on first use and again whenever it changes (inode, size or mtime).

    ``get()`` returns ``(value, None)`` or ``(None, error)``: a file that
    cannot be read or parsed gives an error until it is fixed, and the last
    good value is *not* kept (the caller fails closed). Checking costs one
    ``stat`` per call.
    """

    def __init__(self, path: str, parse: Callable[[bytes], T]) -> None:
        self.path = path
        self._parse = parse
        self._key: tuple[int, int, int] | None = None
        self._value: T | None = None
        self._error: str | None = "not loaded yet"
        self._lock = threading.Lock()
        self.loads = 0

    def get(self) -> tuple[T | None, str | None]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._key = None
            return None, f"cannot read {self.path}: {exc.strerror or exc}"
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._key:
            return self._value, self._error
        with self._lock:
            if key == self._key:
                return self._value, self._error
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
                self._value, self._error = self._parse(data), None
            except OSError as exc:
                self._value, self._error = None, f"cannot read {self.path}: {exc.strerror or exc}"
            except ValueError as exc:
                self._value, self._error = None, f"{self.path}: {exc}"
            self._key = key
            self.loads += 1
            return self._value, self._error


class AuditLog:
    """Appends audit lines to a file (one ``write`` per line, ``O_APPEND``) or to stdout.

    ``write`` returns False when the line could not be written, so the
    caller can fail closed. Opening refuses anything but a regular file
    (``OSError``): a FIFO there would block the sidecar. A log that ends in
    the middle of a line (a write cut short) gets its line ended first, so
    the next line is not glued to the broken one and stays readable.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path or None
        self._fd: int | None = None
        self._lock = threading.Lock()
        if self.path:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o640)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", self.path)
                os.set_blocking(fd, True)
                if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                    os.write(fd, b"\n")
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd

    def write(self, line: bytes) -> bool:
        with self._lock:
            try:
                if self._fd is None:
                    sys.stdout.buffer.write(line)
                    sys.stdout.buffer.flush()
                else:
                    os.write(self._fd, line)
                return True
            except OSError as exc:
                print(f"bottle: cannot write the audit log {self.path}: {exc}", file=sys.stderr)
                return False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def load_tokens(environ: Mapping[str, str], secrets_file: str | None = None) -> dict[str, str]:
    """The brokered secrets by slot: ``BOTTLE_TOKEN_<n>`` variables, then a JSON file of the same names.

    The file (``{"BOTTLE_TOKEN_0": "..."}``) is an alternative to the
    environment for engines where ``inspect`` shows env to too many people.
    Raises ``ValueError`` naming the file (never a value) when it is unreadable
    or malformed; empty values are left out.
    """
    tokens = {k: v for k, v in environ.items() if _TOKEN_VAR.match(k) and v}
    if secrets_file:
        try:
            with open(secrets_file, "rb") as f:
                data = json.loads(f.read())
        except OSError as exc:
            raise ValueError(f"cannot read the secrets file {secrets_file}: {exc.strerror or exc}") from None
        except json.JSONDecodeError:
            raise ValueError(f"the secrets file {secrets_file} is not a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError(f"the secrets file {secrets_file} is not a JSON object")
        for key, value in data.items():
            if not isinstance(key, str) or not _TOKEN_VAR.match(key) or not isinstance(value, str):
                raise ValueError(f"the secrets file {secrets_file} may hold only BOTTLE_TOKEN_<n>: string entries")
            if value:
                tokens[key] = value
    return tokens


def system_ca_bundle() -> str | None:
    """The first system CA bundle that exists, or None."""
    return next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)


def write_ca_bundle(out_path: str, *paths: str | None) -> str:
    """Concatenate the PEM files in ``paths`` (None entries skipped) into ``out_path``; return it.

    Raises ``ValueError`` naming a file that is missing or holds no certificate.
    """
    parts: list[bytes] = []
    for path in paths:
        if not path:
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read the CA bundle {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ValueError(f"{path} holds no PEM certificate")
        parts.append(data.rstrip(b"\n") + b"\n")
    if not parts:
        raise ValueError("no CA certificates to trust")
    with open(out_path, "wb") as f:
        f.write(b"".join(parts))
    return out_path


def write_mitmproxy_confdir(confdir: str, key_file: str, cert_file: str) -> str:
    """Make ``confdir`` hold ``mitmproxy-ca.pem`` (key + certificate, 0600) from the two files; return confdir.

    mitmproxy would mint a CA of its own if none were there; refusing to
    start is better than a CA nobody trusts. Raises ``ValueError``.
    """
    try:
        with open(key_file, "rb") as f:
            key = f.read()
        with open(cert_file, "rb") as f:
            cert = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read the CA ({exc.filename}): {exc.strerror or exc}") from None
    if b"PRIVATE KEY-----" not in key:
        raise ValueError(f"{key_file} holds no PEM private key")
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ValueError(f"{cert_file} holds no PEM certificate")
    os.makedirs(confdir, mode=0o700, exist_ok=True)
    target = os.path.join(confdir, "mitmproxy-ca.pem")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.rstrip(b"\n") + b"\n" + cert.rstrip(b"\n") + b"\n")
    return confdir


class StartupError(Exception):
    """A sidecar cannot start safely; the message says which input is wrong."""


def sidecar_paths(environ: Mapping[str, str], default_role: str) -> dict[str, str]:
    """The files a sidecar uses, from its environment with the container defaults.

    Keys: role, identity, policy, audit_log, ca_key, ca_cert, runtime_dir,
    listen_port, secrets_file.
    """
    role = environ.get("BOTTLE_ROLE") or default_role
    return {
        "role": role,
        "identity": environ.get("BOTTLE_IDENTITY", ""),
        "policy": environ.get("BOTTLE_POLICY_FILE") or DEFAULT_POLICY_FILE,
        "audit_log": environ.get("BOTTLE_AUDIT_LOG") or f"{AUDIT_DIR}/{role}.jsonl",
        "ca_key": environ.get("BOTTLE_CA_KEY") or f"{CA_DIR}/{role}.key",
        "ca_cert": environ.get("BOTTLE_CA_CERT") or f"{CA_DIR}/{role}.crt",
        "runtime_dir": environ.get("BOTTLE_RUNTIME_DIR") or f"/tmp/bottle-{role}",
        "listen_port": environ.get("BOTTLE_LISTEN_PORT") or "8080",
        "secrets_file": environ.get("BOTTLE_SECRETS_FILE", ""),
    }


def base_mitm_args(paths: Mapping[str, str], confdir: str) -> list[str]:
    """mitmdump arguments both sidecars share."""
    port = paths["listen_port"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise StartupError(f"BOTTLE_LISTEN_PORT={port!r} is not a port number")
    return [
        "--listen-port", port,
        "--set", f"confdir={confdir}",
        "--set", f"bottle_policy={paths['policy']}",
        "--set", f"bottle_audit_log={paths['audit_log']}",
        "--set", f"bottle_identity={paths['identity']}",
        "--set", f"bottle_secrets_file={paths['secrets_file']}",
        # The audit log records decisions; mitmproxy's own flow lines add nothing.
        "--set", "flow_detail=0",
        "--set", "termlog_verbosity=warn",
    ]

"""The manifest model: agents and the ``bottle`` block that confines them.

These are the typed, validated results of ``bottle.core.manifest_load``;
every value here has passed its checks (host patterns normalised, upstreams
https, token references well formed). Field names are the manifest's keys;
``docs/manifest.md`` documents each one.

Loader-only fields (``name``, ``instructions``, ``source``, ``base_dir``) are
filled from where the agent was declared, not from user keys (except
``name`` in a Markdown agent file's front matter).
"""

from __future__ import annotations

import posixpath
import re

import msgspec

from bottle.core.errors import UnknownAgentError
from bottle.core.gitgate import DEFAULT_USERNAME, FindingWaiver

# Environment variables the launch plan sets in the agent container itself;
# a manifest that sets them would silently break confinement or trust.
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
CA_TRUST_ENV = ("NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "GIT_SSL_CAINFO")
RESERVED_AGENT_ENV = frozenset(PROXY_ENV + CA_TRUST_ENV + ("ALL_PROXY", "all_proxy"))

DEFAULT_MEMORY = "2g"
DEFAULT_PIDS = 512

_MEMORY = re.compile(r"^\s*(\d+)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_MEMORY_BYTES = 6 * 1024**2  # Docker refuses less


def parse_memory(text: str) -> int:
    """Bytes in a memory size like ``"512m"``, ``"2g"`` or ``"1073741824"``.

    Units are powers of 1024 (``k``, ``m``, ``g``, ``t``; an optional trailing
    ``b``). Raises ``ValueError`` saying what is expected.
    """
    match = _MEMORY.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError("expected a size like '512m' or '2g' (units b, k, m, g, t)")
    size = int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    if size < MIN_MEMORY_BYTES:
        raise ValueError("expected at least 6m (container engines refuse less)")
    return size


class Branches(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Branch rules the git gate applies to pushes (glob patterns on branch names).

    ``protected``: fast-forwards only, never rewound or deleted (``main`` and
    ``master`` when empty). ``allow``: when non-empty, the only branches that
    may be pushed.
    """

    protected: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()


class GitRemote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A git remote brokered by the git gate; ``token_ref`` is the push credential.

    ``username`` is what the gate sends with the token (basic auth).
    ``allow_findings`` are the only way a secret-scan finding is let through
    (a person writes them here; nothing inside the bottle can).
    """

    name: str
    upstream: str
    token_ref: str
    branches: Branches = Branches()
    username: str = DEFAULT_USERNAME
    allow_findings: tuple[FindingWaiver, ...] = ()


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An egress proxy route: requests to ``upstream`` get the secret ``token_ref`` injected."""

    upstream: str
    token_ref: str
    auth_scheme: str = "bearer"


class EgressProxy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    routes: tuple[Route, ...] = ()


class Egress(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hosts the agent may reach, and an extra CA the guard trusts upstream."""

    allow: tuple[str, ...] = ()
    # Non-public addresses or networks the guard may connect to (a registry
    # mirror on the LAN); everything private stays blocked otherwise.
    allow_private: tuple[str, ...] = ()
    extra_ca_file: str | None = None


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Resource limits of the agent container; ``null`` lifts a limit."""

    memory: str | None = DEFAULT_MEMORY
    pids: int | None = DEFAULT_PIDS

    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


class Syscalls(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Syscall groups the agent has back from bottle's policy (``bottle.core.seccomp``); each one weakens it."""

    allow: tuple[str, ...] = ()


class BottleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``bottle`` block: what the agent may reach and how it is confined."""

    egress: Egress = Egress()
    egress_proxy: EgressProxy = EgressProxy()
    git: tuple[GitRemote, ...] = ()
    supervise: bool = False
    # The credentials an agent may ask (add-route proposal) to have injected
    # into a new route; any other token_ref is refused at approval.
    supervise_token_refs: tuple[str, ...] = ()
    limits: Limits = Limits()
    read_only_root: bool = False
    syscalls: Syscalls = Syscalls()


class Agent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One declared agent.

    Exactly one of ``image`` and ``dockerfile`` is set. ``dockerfile`` and
    ``egress.extra_ca_file`` are as written; ``resolve_path`` makes them
    relative to ``base_dir``, the directory of the file that declared the
    agent (``source``). ``command`` of ``None`` keeps the image's own.
    """

    name: str
    image: str | None = None
    dockerfile: str | None = None
    command: tuple[str, ...] | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    description: str = ""
    bottle: BottleConfig = BottleConfig()
    instructions: str = ""
    source: str = ""
    base_dir: str = ""

    def resolve_path(self, path: str) -> str:
        """``path`` as written in the manifest, made relative to the declaring file's directory.

        Absolute paths and ``~``-paths (expanded by the shell that reads
        them) are returned unchanged.
        """
        if path.startswith(("/", "~")) or not self.base_dir:
            return path
        return posixpath.normpath(posixpath.join(self.base_dir, path))

    def dockerfile_path(self) -> str | None:
        return None if self.dockerfile is None else self.resolve_path(self.dockerfile)

    def token_refs(self) -> tuple[str, ...]:
        """Every distinct ``token_ref`` the agent uses (routes, then git remotes), as written."""
        refs: list[str] = []
        for ref in [r.token_ref for r in self.bottle.egress_proxy.routes] + [
            g.token_ref for g in self.bottle.git
        ]:
            if ref not in refs:
                refs.append(ref)
        return tuple(refs)


# Fields of ``Agent`` that the loader fills; a manifest may not set them.
LOADER_FIELDS = frozenset({"name", "instructions", "source", "base_dir"})


class Manifest(msgspec.Struct, frozen=True):
    """The merged agents of every manifest source, in declaration order.

    ``sources`` names every file that was read, earliest first.
    """

    agents: dict[str, Agent] = msgspec.field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(self.agents)

    def agent(self, name: str) -> Agent:
        """The agent called ``name``; ``UnknownAgentError`` listing the known ones if none is."""
        try:
            return self.agents[name]
        except KeyError:
            raise UnknownAgentError(name, tuple(self.agents), self.sources) from None

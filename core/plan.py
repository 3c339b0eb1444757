"""The launch plan: everything one bottle will be, decided before anything is created.

``plan_launch`` is a pure function of (agent, launch request, identity,
which secrets are present). ``bottle start --dry-run`` prints its result;
the launcher applies it through the ``ContainerRuntime`` port.

The plan holds environment variable *names*. A value appears only when
bottle itself computes it and it is not secret (proxy URLs, CA paths, the
Claude base URL, telemetry switches). Values from the manifest's ``env`` are
left out (``source="manifest"``); secrets are named by the ``token_ref``
they come from (``source="secret"``) and read by the launcher, never here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from bottle.core import gitgate, naming, routing
from bottle.core.images import DEFAULT_BASE_IMAGE, sidecar_image_tag
from bottle.core.identity import is_identity, slugify
from bottle.core.lifecycle import AGENT_HOME, CA_BUNDLE_PATHS
from bottle.core.manifest import Agent, Manifest, Route, parse_memory
from bottle.core.manifest_load import ANTHROPIC_HOST
from bottle.core.proposals import DECISIONS_DIR, FILINGS_DIR
from bottle.core.seccomp import SyscallPlan, syscall_plan
from bottle.core.state import (
    DOCKERFILE,
    audit_dir,
    ca_cert_path,
    ca_key_path,
    per_bottle_image_tag,
)
from bottle.core.tokenref import parse_token_ref

__all__ = [
    "AGENT_CA_PATH",
    "AGENT_BUNDLE_STATE",
    "AGENT_GROUP_STATE",
    "AGENT_PASSWD_STATE",
    "BUILD_CONTEXT_STATE",
    "HOME_STATE_DIR",
    "SIDECAR_SECRETS_FILE",
    "DEFAULT_AGENT_USER",
    "PLACEHOLDER_TOKEN",
    "SIDECAR_PORT",
    "WORKSPACE",
    "GATE_HEALTH_PATH",
    "ContainerPlan",
    "EnvVar",
    "GitRemotePlan",
    "ImageSettings",
    "ImageStep",
    "LaunchPlan",
    "LaunchRequest",
    "MountPlan",
    "NetworkAttachmentPlan",
    "NetworkPlan",
    "ProxyWiring",
    "RoutePlan",
    "SecretPlan",
    "SecretUse",
    "gate_remotes",
    "plan_launch",
    "secret_uses",
    "with_approved",
]

WORKSPACE = "/workspace"
# Every sidecar listens on this port inside its own container.
SIDECAR_PORT = 8080
# Where the agent finds the CA of the proxy it talks to.
AGENT_CA_PATH = "/etc/bottle/ca.crt"
SIDECAR_CA_DIR = "/etc/bottle/ca"
SIDECAR_UPSTREAM_CA = "/etc/bottle/upstream-ca.crt"
SIDECAR_EXTRA_CA = "/etc/bottle/extra-ca.pem"
SIDECAR_AUDIT_DIR = "/var/log/bottle"
GATE_HEALTH_PATH = gitgate.HEALTH_PATH
# The guard and the egress proxy read their policy (allowlist, routes) from
# this directory; a directory mount, so an atomic rename on the host shows.
POLICY_STATE_DIR = "policy"
SIDECAR_POLICY_DIR = "/etc/bottle/policy"
# The supervise sidecar's side of the proposal queue (the defaults of
# bottle.sidecars.supervise.server): filings it writes, decisions it only reads.
SUPERVISE_QUEUE_DIR = "/run/supervise/queue"
SUPERVISE_DECISIONS_DIR = "/run/supervise/decisions"
SUPERVISE_HEALTH_PATH = "/healthz"
# The build context of the per-bottle image: a state directory the launcher
# fills with a copy of the per-bottle Dockerfile and nothing else (the state
# itself holds the CA keys, which must never reach a build).
BUILD_CONTEXT_STATE = "build"
DEFAULT_AGENT_USER = "1000:1000"
# What the agent sees where a Claude credential would be: not a secret, and
# shaped like no real token so the guard's scanners never mistake it for one.
PLACEHOLDER_TOKEN = "bottle-placeholder-not-a-secret"
GIT_TOKEN_SLOT_PREFIX = "BOTTLE_GIT_TOKEN_"
# A sidecar's secrets arrive as this file, copied in before it starts (an
# engine's `inspect` shows environment variables, not files).
SIDECAR_SECRETS_FILE = "/run/bottle-secrets.json"
# Files of the agent the launcher derives from its image and mounts read-only
# (state paths), and the state directory mounted as its home.
AGENT_PASSWD_STATE = "agent/passwd"
AGENT_GROUP_STATE = "agent/group"
AGENT_BUNDLE_STATE = "agent/ca-certificates.crt"
HOME_STATE_DIR = "home"

CLAUDE_TELEMETRY_OFF = (
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
    ("DISABLE_TELEMETRY", "1"),
)


# -- input ------------------------------------------------------------------


class ImageSettings(msgspec.Struct, frozen=True):
    """Which tags sidecar images carry (``version``) and the base Dockerfiles build on."""

    version: str
    base_image: str = DEFAULT_BASE_IMAGE


class LaunchRequest(msgspec.Struct, frozen=True):
    """What the user asked for, plus facts about the host the shell gathered.

    ``cwd`` and ``state_dir`` (the bottle's state directory on the host) are
    absolute. ``user`` is ``uid:gid`` of the invoking user (the agent runs
    as it so the project mount stays writable); root or ``None`` falls back
    to ``DEFAULT_AGENT_USER``. ``home`` expands ``~`` in manifest paths.
    ``per_bottle_dockerfile`` says whether the state holds a Dockerfile from
    an approved capability change (on resume).

    ``sidecar_user`` is who the sidecars run as (None: the image's user);
    ``userns`` the agent's user namespace mode (``keep-id`` on rootless
    Podman); both come from ``lifecycle.choose_users``. ``limits_supported``
    is False where the engine cannot apply pids/memory limits (rootless
    Podman on cgroup v1): the agent then runs without them, with a warning.
    ``interactive`` gives the agent a terminal (no ``-- CMD``).

    ``approved_hosts`` and ``approved_routes`` are what applied supervise
    proposals added to the bottle (on resume; ``proposals.approved_changes``):
    the plan merges them into the agent's allowlist and routes
    (``with_approved``), as must everything else that reads the agent for
    this launch (its secrets, its policy file).
    """

    agent: str
    cwd: str
    runtime: str
    state_dir: str
    images: ImageSettings
    copy_cwd: bool = False
    command: tuple[str, ...] | None = None
    user: str | None = None
    home: str = ""
    per_bottle_dockerfile: bool = False
    sidecar_user: str | None = None
    userns: str | None = None
    limits_supported: bool = True
    interactive: bool = True
    approved_hosts: tuple[str, ...] = ()
    approved_routes: tuple[Route, ...] = ()


def with_approved(agent: Agent, hosts: Sequence[str] = (), routes: Sequence[Route] = ()) -> Agent:
    """``agent`` with ``hosts`` added to its ``egress.allow`` and ``routes`` to its routes.

    What a resumed bottle runs with: the manifest plus what applied
    proposals added. Idempotent: a host already allowed, or a route whose
    upstream (host, port and path prefix) the agent already has, is not
    added again; the manifest's own route wins over an approved one.
    """
    if not hosts and not routes:
        return agent
    bottle = agent.bottle
    allow = tuple(dict.fromkeys([*bottle.egress.allow, *hosts]))
    merged = list(bottle.egress_proxy.routes)
    keys = {routing.parse_upstream(r.upstream) for r in merged}
    for route in routes:
        key = routing.parse_upstream(route.upstream)
        if key not in keys:
            keys.add(key)
            merged.append(Route(route.upstream, route.token_ref, route.auth_scheme))
    return msgspec.structs.replace(
        agent,
        bottle=msgspec.structs.replace(
            bottle,
            egress=msgspec.structs.replace(bottle.egress, allow=allow),
            egress_proxy=msgspec.structs.replace(bottle.egress_proxy, routes=tuple(merged)),
        ),
    )


class SecretUse(msgspec.Struct, frozen=True):
    """One secret an agent needs: ``ref`` normalised (``env:NAME``/``file:PATH``);
    ``kind`` and ``name`` are what to ask a ``SecretSource`` (file paths made
    relative to the declaring manifest, ``~`` left for the source to expand)."""

    ref: str
    kind: str
    name: str


def secret_uses(agent: Agent) -> tuple[SecretUse, ...]:
    """The distinct secrets ``agent`` refers to, routes first, in declaration order."""
    uses: dict[str, SecretUse] = {}
    for ref in agent.token_refs():
        parsed = parse_token_ref(ref)
        name = agent.resolve_path(parsed.name) if parsed.kind == "file" else parsed.name
        uses.setdefault(str(parsed), SecretUse(str(parsed), parsed.kind, name))
    return tuple(uses.values())


# -- output -----------------------------------------------------------------

EnvSource = Literal["bottle", "manifest", "placeholder", "secret"]


class EnvVar(msgspec.Struct, frozen=True, omit_defaults=True):
    """One environment variable of a container.

    ``value`` is set only for ``source="bottle"`` (computed, never secret).
    ``manifest``: the value is the agent's ``env`` entry. ``placeholder``:
    ``PLACEHOLDER_TOKEN``. ``secret``: read from ``token_ref`` at launch.
    """

    name: str
    source: EnvSource
    value: str | None = None
    token_ref: str | None = None


class ImageStep(msgspec.Struct, frozen=True, omit_defaults=True):
    """One image the launch needs, in build order.

    ``action="use"``: the image must exist locally. ``"build"``: built from
    ``dockerfile`` (a host path, or ``"(generated)"``) in ``context``, on
    top of ``base`` (passed as the ``BASE`` build arg).
    """

    role: str
    tag: str
    action: Literal["use", "build"]
    dockerfile: str | None = None
    context: str | None = None
    base: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class NetworkPlan(msgspec.Struct, frozen=True):
    role: str
    name: str
    internal: bool
    labels: dict[str, str]


class NetworkAttachmentPlan(msgspec.Struct, frozen=True):
    network: str
    aliases: tuple[str, ...] = ()


class MountPlan(msgspec.Struct, frozen=True):
    """A bind mount of host ``source`` at ``target``."""

    source: str
    target: str
    read_only: bool


class ContainerPlan(msgspec.Struct, frozen=True):
    """One container; ``networks[0]`` is the one it is created on."""

    role: str
    name: str
    image: str
    labels: dict[str, str]
    networks: tuple[NetworkAttachmentPlan, ...]
    env: tuple[EnvVar, ...]
    mounts: tuple[MountPlan, ...] = ()
    command: tuple[str, ...] | None = None
    user: str | None = None
    workdir: str | None = None
    cap_drop: tuple[str, ...] = ("ALL",)
    no_new_privileges: bool = True
    read_only_rootfs: bool = False
    tmpfs: dict[str, str] = msgspec.field(default_factory=dict)
    pids_limit: int | None = None
    memory_bytes: int | None = None
    tty: bool = False
    stdin_open: bool = False
    userns: str | None = None
    # Where the launcher copies the container's ``source="secret"`` variables
    # (as a JSON object) before it starts; they are not passed as env.
    secrets_file: str | None = None
    # The sidecar is ready when ``GET <health_path>`` on SIDECAR_PORT answers
    # 200; None: when the port accepts connections.
    health_path: str | None = None
    # bottle's syscall policy (bottle.core.seccomp); only the agent's may have
    # groups given back by its manifest, sidecars keep this default.
    syscalls: SyscallPlan = msgspec.field(default_factory=syscall_plan)


class ProxyWiring(msgspec.Struct, frozen=True):
    """How the agent's HTTP leaves: via ``agent_proxy`` (a role), then the guard."""

    agent_proxy: str
    agent_proxy_url: str
    no_proxy: tuple[str, ...]
    egress_proxy_upstream: str | None


class RoutePlan(msgspec.Struct, frozen=True):
    """A resolved route; ``token_env`` is the egress proxy's variable holding its secret."""

    upstream: str
    host: str
    port: int
    path_prefix: str
    auth_scheme: str
    header_name: str
    token_ref: str
    token_env: str
    token_present: bool


class GitRemotePlan(msgspec.Struct, frozen=True):
    """A brokered remote: the agent's git rewrites ``upstream`` to ``gate_url``.

    ``token_env`` is the gate's variable holding the credential, sent as
    ``username``; ``allow_findings`` are the manifest's waivers of scan findings.
    """

    name: str
    upstream: str
    gate_url: str
    token_ref: str
    token_env: str
    token_present: bool
    protected: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    username: str = gitgate.DEFAULT_USERNAME
    allow_findings: tuple[gitgate.FindingWaiver, ...] = ()


def gate_remotes(remotes: tuple[GitRemotePlan, ...]) -> tuple[gitgate.GateRemote, ...]:
    """The remotes as the git gate (``BOTTLE_GIT_REMOTES``) and the agent's ``~/.gitconfig`` see them."""
    return tuple(gitgate.gate_remote(r, r.allow_findings, r.username) for r in remotes)


class SecretPlan(msgspec.Struct, frozen=True):
    token_ref: str
    present: bool
    used_by: tuple[str, ...]


class LaunchPlan(msgspec.Struct, frozen=True):
    """Everything one launch will create and how it is wired. See the module docstring."""

    identity: str
    agent: str
    description: str
    runtime: str
    cwd: str
    copy_cwd: bool
    agent_image: str
    command: tuple[str, ...] | None
    images: tuple[ImageStep, ...]
    networks: tuple[NetworkPlan, ...]
    containers: tuple[ContainerPlan, ...]
    proxy: ProxyWiring
    routes: tuple[RoutePlan, ...]
    allowlist: tuple[str, ...]
    extra_ca_file: str | None
    git_remotes: tuple[GitRemotePlan, ...]
    supervise: bool
    claude: bool
    secrets: tuple[SecretPlan, ...]
    missing_secrets: tuple[str, ...]
    warnings: tuple[str, ...]

    def container(self, role: str) -> ContainerPlan | None:
        """The container in ``role``, or ``None`` when this bottle has none."""
        return next((c for c in self.containers if c.role == role), None)

    def audit_dirs(self) -> tuple[str, ...]:
        """State paths of the audit directories the sidecars mount, one per role (``audit/<role>``).

        They must exist, owned by the user the sidecars write as, before a
        container starts: an engine would create a missing one as root, or
        refuse to start.
        """
        return tuple(
            audit_dir(c.role) for c in self.containers if any(m.target == SIDECAR_AUDIT_DIR for m in c.mounts)
        )


# -- the function -----------------------------------------------------------


def _url(role: str) -> str:
    return f"http://{role}:{SIDECAR_PORT}"


def _expand_home(path: str, home: str) -> str:
    if home and (path == "~" or path.startswith("~/")):
        return home + path[1:]
    return path


def _claude_placeholder(auth_scheme: str) -> str:
    # Claude Code sends ANTHROPIC_API_KEY as x-api-key and an OAuth token as a
    # bearer; the placeholder must make it choose the header the route rewrites.
    return "ANTHROPIC_API_KEY" if auth_scheme == "x-api-key" else "CLAUDE_CODE_OAUTH_TOKEN"


def _agent_user(requested: str | None) -> str:
    if not requested:
        return DEFAULT_AGENT_USER
    uid = requested.split(":", 1)[0]
    if uid in ("0", "root", ""):
        return DEFAULT_AGENT_USER
    return requested


def plan_launch(
    manifest: Manifest | Agent,
    request: LaunchRequest,
    identity: str,
    secrets_present: Mapping[str, bool],
) -> LaunchPlan:
    """Decide everything a launch of ``request.agent`` as ``identity`` creates.

    ``manifest`` is the merged manifest (the agent is looked up by name,
    ``UnknownAgentError`` if absent) or the agent itself. ``secrets_present``
    maps each normalised token_ref (``secret_uses(agent)[i].ref``) to
    whether its secret exists; a ref not in it counts as missing. Missing
    secrets are listed in ``missing_secrets`` and ``warnings``; launching
    must refuse while any is missing. Pure: touches nothing. Raises
    ``ValueError`` if ``identity`` is not one ``new_identity`` could make.
    """
    if not is_identity(identity):
        raise ValueError(f"{identity!r} is not a bottle identity")
    agent = manifest.agent(request.agent) if isinstance(manifest, Manifest) else manifest
    agent = with_approved(agent, request.approved_hosts, request.approved_routes)
    bottle = agent.bottle
    table = routing.build_route_table(bottle.egress_proxy.routes)
    allowlist = routing.effective_allowlist(bottle.egress.allow, table)
    has_routes = bool(table.routes)
    has_git = bool(bottle.git)

    def name(role: str) -> str:
        return naming.resource_name(role, identity)

    def labels(role: str) -> dict[str, str]:
        return naming.managed_labels(identity, role, agent.name)

    def state(relpath: str) -> str:
        return posixpath.join(request.state_dir, relpath)

    # -- secrets
    present = {ref: bool(v) for ref, v in secrets_present.items()}
    used_by: dict[str, list[str]] = {}
    for route in table.routes:
        used_by.setdefault(route.token_ref, []).append(f"route {route.upstream}")
    git_slots: dict[str, str] = {}
    for remote in bottle.git:
        ref = str(parse_token_ref(remote.token_ref))
        used_by.setdefault(ref, []).append(f"git remote {remote.name}")
        git_slots.setdefault(ref, f"{GIT_TOKEN_SLOT_PREFIX}{len(git_slots)}")
    secrets = tuple(
        SecretPlan(ref, present.get(ref, False), tuple(users)) for ref, users in used_by.items()
    )
    missing = tuple(s.token_ref for s in secrets if not s.present)
    warnings = [
        f"secret {ref} is missing (needed by {', '.join(used_by[ref])}); "
        "`bottle start` refuses to launch until it is set"
        for ref in missing
    ]

    # -- images
    images: list[ImageStep] = []
    build_args_base = request.images.base_image
    if agent.image is not None:
        images.append(ImageStep("agent", agent.image, "use"))
    else:
        dockerfile = _expand_home(agent.dockerfile_path() or "", request.home)
        images.append(
            ImageStep(
                "agent",
                f"localhost/bottle-dockerfile-{slugify(agent.name)}:latest",
                "build",
                dockerfile=dockerfile,
                context=posixpath.dirname(dockerfile) or ".",
                base=build_args_base,
                labels={naming.LABEL_MANAGED: "true", naming.LABEL_AGENT: agent.name},
            )
        )
    if request.per_bottle_dockerfile:
        # Never the state dir itself as the context: it holds the CA keys.
        images.append(
            ImageStep(
                "agent",
                per_bottle_image_tag(identity),
                "build",
                dockerfile=state(DOCKERFILE),
                context=state(BUILD_CONTEXT_STATE),
                base=images[-1].tag,
                labels=labels(naming.ROLE_AGENT),
            )
        )
    if request.copy_cwd:
        images.append(
            ImageStep(
                "agent",
                f"localhost/bottle-project-{identity}:latest",
                "build",
                dockerfile="(generated)",
                context=request.cwd,
                base=images[-1].tag,
                labels=labels(naming.ROLE_AGENT),
            )
        )
    agent_image = images[-1].tag
    sidecar_roles = [naming.ROLE_GUARD]
    if has_routes:
        sidecar_roles.append(naming.ROLE_EGRESS_PROXY)
    if has_git:
        sidecar_roles.append(naming.ROLE_GIT_GATE)
    if bottle.supervise:
        sidecar_roles.append(naming.ROLE_SUPERVISE)
    for role in sidecar_roles:
        images.append(ImageStep(role, sidecar_image_tag(role, request.images.version), "use"))

    # -- networks
    internal = name(naming.ROLE_INTERNAL_NET)
    egress = name(naming.ROLE_EGRESS_NET)
    networks = (
        NetworkPlan(naming.ROLE_INTERNAL_NET, internal, True, labels(naming.ROLE_INTERNAL_NET)),
        NetworkPlan(naming.ROLE_EGRESS_NET, egress, False, labels(naming.ROLE_EGRESS_NET)),
    )

    # -- proxy wiring
    agent_proxy = naming.ROLE_EGRESS_PROXY if has_routes else naming.ROLE_GUARD
    no_proxy = ["localhost", "127.0.0.1", "::1"]
    if has_git:
        no_proxy.append(naming.ROLE_GIT_GATE)
    if bottle.supervise:
        no_proxy.append(naming.ROLE_SUPERVISE)
    proxy = ProxyWiring(
        agent_proxy=agent_proxy,
        agent_proxy_url=_url(agent_proxy),
        no_proxy=tuple(no_proxy),
        egress_proxy_upstream=_url(naming.ROLE_GUARD) if has_routes else None,
    )

    # -- routes, git
    routes = tuple(
        RoutePlan(
            r.upstream, r.host, r.port, r.path_prefix, r.auth_scheme, r.header_name,
            r.token_ref, r.token_slot, present.get(r.token_ref, False),
        )
        for r in table.routes
    )
    git_remotes = tuple(
        GitRemotePlan(
            name=remote.name,
            upstream=remote.upstream,
            gate_url=gitgate.gate_url(remote.name, naming.ROLE_GIT_GATE, SIDECAR_PORT),
            token_ref=str(parse_token_ref(remote.token_ref)),
            token_env=git_slots[str(parse_token_ref(remote.token_ref))],
            token_present=present.get(str(parse_token_ref(remote.token_ref)), False),
            protected=remote.branches.protected,
            allow=remote.branches.allow,
            username=remote.username,
            allow_findings=remote.allow_findings,
        )
        for remote in bottle.git
    )
    claude_route = next((r for r in table.routes if r.host == ANTHROPIC_HOST), None)

    # -- containers
    # Each sidecar writes audit/<role>/<role>.jsonl in a directory of its own:
    # none may write another's log (the host trusts the guard's), nor the
    # host's own log at the top of audit/.
    def audit_mount(role: str) -> MountPlan:
        return MountPlan(state(audit_dir(role)), SIDECAR_AUDIT_DIR, False)

    policy_mount = MountPlan(state(POLICY_STATE_DIR), SIDECAR_POLICY_DIR, True)

    def ca_mounts(role: str) -> list[MountPlan]:
        return [
            MountPlan(state(ca_cert_path(role)), f"{SIDECAR_CA_DIR}/{role}.crt", True),
            MountPlan(state(ca_key_path(role)), f"{SIDECAR_CA_DIR}/{role}.key", True),
        ]

    def common_env(role: str) -> list[EnvVar]:
        return [
            EnvVar("BOTTLE_IDENTITY", "bottle", identity),
            EnvVar("BOTTLE_ROLE", "bottle", role),
        ]

    route_secret_env = [
        EnvVar(slot, "secret", token_ref=ref) for slot, ref in table.slots().items()
    ]

    containers: list[ContainerPlan] = []

    # agent
    agent_env = common_env(naming.ROLE_AGENT)
    proxy_url = proxy.agent_proxy_url
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        agent_env.append(EnvVar(var, "bottle", proxy_url))
    for var in ("NO_PROXY", "no_proxy"):
        agent_env.append(EnvVar(var, "bottle", ",".join(proxy.no_proxy)))
    for var in ("NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "GIT_SSL_CAINFO"):
        agent_env.append(EnvVar(var, "bottle", AGENT_CA_PATH))
    if claude_route is not None:
        agent_env.append(EnvVar("ANTHROPIC_BASE_URL", "bottle", claude_route.upstream))
        agent_env.append(EnvVar(_claude_placeholder(claude_route.auth_scheme), "placeholder"))
        agent_env.extend(EnvVar(k, "bottle", v) for k, v in CLAUDE_TELEMETRY_OFF)
    if bottle.supervise:
        agent_env.append(EnvVar("BOTTLE_SUPERVISE_URL", "bottle", _url(naming.ROLE_SUPERVISE)))
    agent_env.append(EnvVar("HOME", "bottle", AGENT_HOME))
    agent_env.extend(EnvVar(key, "manifest") for key in agent.env)
    agent_mounts = []
    if not request.copy_cwd:
        agent_mounts.append(MountPlan(request.cwd, WORKSPACE, False))
    agent_mounts += [
        MountPlan(state(ca_cert_path(agent_proxy)), AGENT_CA_PATH, True),
        # The image's own files with the agent's user and the bottle CA added;
        # the CA bundle's target is where the image keeps it (the launcher
        # moves it for images that keep it elsewhere).
        MountPlan(state(AGENT_PASSWD_STATE), "/etc/passwd", True),
        MountPlan(state(AGENT_GROUP_STATE), "/etc/group", True),
        MountPlan(state(AGENT_BUNDLE_STATE), CA_BUNDLE_PATHS[0], True),
        MountPlan(state(HOME_STATE_DIR), AGENT_HOME, False),
    ]
    memory = bottle.limits.memory
    pids = bottle.limits.pids
    if not request.limits_supported and (memory is not None or pids is not None):
        warnings.append(
            f"{request.runtime} here cannot apply pids or memory limits (rootless on cgroup v1): "
            "the agent runs without them"
        )
        memory = pids = None
    agent_syscalls = syscall_plan(bottle.syscalls.allow)
    if agent_syscalls.allowed:
        warnings.append(
            f"the agent's syscall policy is weakened: {', '.join(agent_syscalls.allowed)} allowed back "
            "by bottle.syscalls.allow"
        )
    containers.append(
        ContainerPlan(
            role=naming.ROLE_AGENT,
            name=name(naming.ROLE_AGENT),
            image=agent_image,
            labels=labels(naming.ROLE_AGENT),
            networks=(NetworkAttachmentPlan(internal),),
            env=tuple(agent_env),
            mounts=tuple(agent_mounts),
            command=request.command if request.command else agent.command,
            user=_agent_user(request.user),
            workdir=WORKSPACE,
            read_only_rootfs=bottle.read_only_root,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m"} if bottle.read_only_root else {},
            pids_limit=pids,
            memory_bytes=None if memory is None else parse_memory(memory),
            tty=request.interactive,
            stdin_open=request.interactive,
            userns=request.userns,
            syscalls=agent_syscalls,
        )
    )

    def with_secrets(env: list[EnvVar]) -> tuple[tuple[EnvVar, ...], str | None]:
        if not any(v.source == "secret" for v in env):
            return tuple(env), None
        return tuple(env + [EnvVar("BOTTLE_SECRETS_FILE", "bottle", SIDECAR_SECRETS_FILE)]), SIDECAR_SECRETS_FILE

    # guard: the only container with a way out for HTTP
    git_secret_env = [EnvVar(slot, "secret", token_ref=ref) for ref, slot in git_slots.items()]
    # The guard holds every brokered secret only to recognise it leaving by the
    # wrong door. It reads BOTTLE_TOKEN_<n>: git credentials that no route
    # shares get the slots after the routes' (no route, so allowed nowhere).
    route_slots = table.slots()
    guard_only = [ref for ref in git_slots if ref not in route_slots.values()]
    guard_env = common_env(naming.ROLE_GUARD) + route_secret_env + [
        EnvVar(f"{routing.TOKEN_SLOT_PREFIX}{len(route_slots) + i}", "secret", token_ref=ref)
        for i, ref in enumerate(guard_only)
    ]
    guard_mounts = ca_mounts(naming.ROLE_GUARD) + [policy_mount, audit_mount(naming.ROLE_GUARD)]
    extra_ca = None
    if bottle.egress.extra_ca_file is not None:
        extra_ca = _expand_home(agent.resolve_path(bottle.egress.extra_ca_file), request.home)
        guard_mounts.append(MountPlan(extra_ca, SIDECAR_EXTRA_CA, True))
        guard_env.append(EnvVar("BOTTLE_EXTRA_CA_FILE", "bottle", SIDECAR_EXTRA_CA))
    guard_vars, guard_secrets = with_secrets(guard_env)
    containers.append(
        ContainerPlan(
            role=naming.ROLE_GUARD,
            name=name(naming.ROLE_GUARD),
            image=sidecar_image_tag(naming.ROLE_GUARD, request.images.version),
            labels=labels(naming.ROLE_GUARD),
            networks=(
                NetworkAttachmentPlan(internal, (naming.ROLE_GUARD,)),
                NetworkAttachmentPlan(egress),
            ),
            env=guard_vars,
            mounts=tuple(guard_mounts),
            user=request.sidecar_user,
            secrets_file=guard_secrets,
        )
    )

    if has_routes:
        proxy_env = common_env(naming.ROLE_EGRESS_PROXY) + [
            EnvVar("HTTPS_PROXY", "bottle", _url(naming.ROLE_GUARD)),
            EnvVar("HTTP_PROXY", "bottle", _url(naming.ROLE_GUARD)),
            EnvVar("BOTTLE_UPSTREAM_CA", "bottle", SIDECAR_UPSTREAM_CA),
        ] + route_secret_env
        proxy_vars, proxy_secrets = with_secrets(proxy_env)
        containers.append(
            ContainerPlan(
                role=naming.ROLE_EGRESS_PROXY,
                name=name(naming.ROLE_EGRESS_PROXY),
                image=sidecar_image_tag(naming.ROLE_EGRESS_PROXY, request.images.version),
                labels=labels(naming.ROLE_EGRESS_PROXY),
                networks=(
                    NetworkAttachmentPlan(internal, (naming.ROLE_EGRESS_PROXY,)),
                    NetworkAttachmentPlan(egress),
                ),
                env=proxy_vars,
                user=request.sidecar_user,
                secrets_file=proxy_secrets,
                mounts=tuple(
                    ca_mounts(naming.ROLE_EGRESS_PROXY)
                    + [
                        MountPlan(state(ca_cert_path(naming.ROLE_GUARD)), SIDECAR_UPSTREAM_CA, True),
                        policy_mount,
                        audit_mount(naming.ROLE_EGRESS_PROXY),
                    ]
                ),
            )
        )

    if has_git:
        # The gate talks to the upstreams itself, from the egress network: the
        # guard refuses every git push, and what the agent pushes has passed the
        # gate's own scan. It reaches only the remotes' hosts, with their credential.
        gate_env = common_env(naming.ROLE_GIT_GATE) + [
            EnvVar(gitgate.CONFIG_ENV, "bottle", gitgate.encode_gate_config(gate_remotes(git_remotes))),
        ]
        gate_mounts = [audit_mount(naming.ROLE_GIT_GATE)]
        if extra_ca is not None:
            gate_mounts.append(MountPlan(extra_ca, SIDECAR_EXTRA_CA, True))
            gate_env.append(EnvVar("BOTTLE_EXTRA_CA_FILE", "bottle", SIDECAR_EXTRA_CA))
        gate_vars, gate_secrets = with_secrets(gate_env + git_secret_env)
        containers.append(
            ContainerPlan(
                role=naming.ROLE_GIT_GATE,
                name=name(naming.ROLE_GIT_GATE),
                image=sidecar_image_tag(naming.ROLE_GIT_GATE, request.images.version),
                labels=labels(naming.ROLE_GIT_GATE),
                networks=(
                    NetworkAttachmentPlan(internal, (naming.ROLE_GIT_GATE,)),
                    NetworkAttachmentPlan(egress),
                ),
                env=gate_vars,
                mounts=tuple(gate_mounts),
                user=request.sidecar_user,
                secrets_file=gate_secrets,
                health_path=GATE_HEALTH_PATH,
            )
        )

    if bottle.supervise:
        containers.append(
            ContainerPlan(
                role=naming.ROLE_SUPERVISE,
                name=name(naming.ROLE_SUPERVISE),
                image=sidecar_image_tag(naming.ROLE_SUPERVISE, request.images.version),
                labels=labels(naming.ROLE_SUPERVISE),
                networks=(NetworkAttachmentPlan(internal, (naming.ROLE_SUPERVISE,)),),
                env=tuple(common_env(naming.ROLE_SUPERVISE)),
                mounts=(
                    MountPlan(state(FILINGS_DIR), SUPERVISE_QUEUE_DIR, False),
                    MountPlan(state(DECISIONS_DIR), SUPERVISE_DECISIONS_DIR, True),
                ),
                user=request.sidecar_user,
                health_path=SUPERVISE_HEALTH_PATH,
            )
        )

    return LaunchPlan(
        identity=identity,
        agent=agent.name,
        description=agent.description,
        runtime=request.runtime,
        cwd=request.cwd,
        copy_cwd=request.copy_cwd,
        agent_image=agent_image,
        command=request.command if request.command else agent.command,
        images=tuple(images),
        networks=networks,
        containers=tuple(containers),
        proxy=proxy,
        routes=routes,
        allowlist=allowlist.patterns,
        extra_ca_file=extra_ca,
        git_remotes=git_remotes,
        supervise=bottle.supervise,
        claude=claude_route is not None,
        secrets=secrets,
        missing_secrets=missing,
        warnings=tuple(warnings),
    )

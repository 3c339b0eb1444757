"""The lifecycle of a bottle, as decisions: launch steps, teardown, probes, cleanup, listings.

Everything here is pure. The launcher (``bottle.cli.launcher``) gathers facts
from the engine and the host, calls these functions and applies what they
return through the ports:

- ``choose_users``       who the agent and the sidecars run as, so files on
                         the host belong to the person who started the bottle
- ``launch_steps``       the ordered steps of a launch, as a dependency graph
                         (independent steps may run at the same time)
- ``teardown_waves``     what to remove, in which order, given what a launch
                         recorded as created
- ``orphan_verdict``     whether anything already carries a bottle's names or
                         labels (then nothing may be created)
- ``agent_files``        the agent's /etc/passwd, /etc/group, CA bundle and
                         ~/.gitconfig, from what its image holds
- ``select_cleanup``     what ``bottle cleanup`` removes
- ``ls_rows``            what ``bottle ls`` shows
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

import msgspec

from bottle.core import naming
from bottle.core.state import BottleMetadata
from bottle.ports.errors import InputError

__all__ = [
    "AGENT_HOME",
    "AGENT_USER_NAME",
    "LAUNCHER_RECORD",
    "READY_PROBE",
    "AgentFiles",
    "BottleInUse",
    "CleanupPlan",
    "Created",
    "FoundResource",
    "ImageFacts",
    "LauncherRecord",
    "LsRow",
    "NameTaken",
    "OrphanVerdict",
    "StateFacts",
    "Step",
    "Users",
    "agent_files",
    "attach_argv",
    "build_cache_key",
    "choose_users",
    "gitconfig_text",
    "launch_steps",
    "ls_rows",
    "orphan_verdict",
    "project_dockerfile",
    "ready_probe",
    "render_ls",
    "select_cleanup",
    "teardown_waves",
]

# The agent's home directory inside the container; a directory of the state
# on the host, so what the agent keeps there (a transcript) survives a
# preserved teardown and comes back on resume.
AGENT_HOME = "/home/bottle"
AGENT_USER_NAME = "bottle"
# Where the launcher records itself in the state: ``cleanup`` leaves alone a
# bottle whose launcher still runs (it may be half-way through a launch).
LAUNCHER_RECORD = "launcher.json"
# Run in a sidecar with (port, seconds[, path]): exits 0 as soon as the port
# accepts connections (with a path: as soon as ``GET path`` answers 200), 1 if
# that does not happen within the seconds. One exec waits for the sidecar to
# come up, with ~10 ms of lag, instead of one exec per attempt.
READY_PROBE = (
    "python3",
    "-c",
    "import socket, sys, time\n"
    "end = time.monotonic() + float(sys.argv[2])\n"
    "path = sys.argv[3] if len(sys.argv) > 3 else ''\n"
    "while True:\n"
    "    try:\n"
    "        s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)\n"
    "        if not path:\n"
    "            s.close()\n"
    "            sys.exit(0)\n"
    "        s.settimeout(2)\n"
    "        s.sendall(b'GET ' + path.encode() + b' HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n"
    "        status = s.recv(64).split(b' ')[1:2]\n"
    "        s.close()\n"
    "        if status == [b'200']:\n"
    "            sys.exit(0)\n"
    "    except OSError:\n"
    "        pass\n"
    "    if time.monotonic() > end:\n"
    "        sys.exit(1)\n"
    "    time.sleep(0.01)\n",
)


def ready_probe(port: int, seconds: float, health_path: str | None = None) -> tuple[str, ...]:
    """The argv of ``READY_PROBE`` for a sidecar on ``port`` (see ``ContainerPlan.health_path``)."""
    return (*READY_PROBE, str(port), f"{seconds:g}", *((health_path,) if health_path else ()))

DEFAULT_AGENT_USER = "1000:1000"


# -- who runs as whom ---------------------------------------------------------


class Users(msgspec.Struct, frozen=True):
    """``agent``: uid:gid the agent runs as; ``sidecars``: uid:gid of the sidecars (None: the image's);
    ``userns``: the agent's user namespace mode; ``note``: something the preflight should say."""

    agent: str
    sidecars: str | None
    userns: str | None = None
    note: str | None = None


def choose_users(
    *,
    euid: int,
    egid: int,
    rootless_engine: bool,
    sudo_uid: int | None = None,
    sudo_gid: int | None = None,
    cwd_owner: tuple[int, int] | None = None,
) -> Users:
    """Who the agent and the sidecars run as.

    The agent writes the project at /workspace, so it runs as the person who
    owns the project on the host; the sidecars read the bottle's state (CA
    keys 0600), so they run as the user who wrote it (this process).

    - Rootless Podman: the engine's user namespace maps container root to the
      invoking user, so sidecars keep the image's user (root inside) and the
      agent runs as the invoking uid with ``keep-id`` (same uid inside and out).
    - Rootful engines, a non-root caller: both run as the caller.
    - Root via sudo: the agent runs as ``SUDO_UID:SUDO_GID``.
    - Root without sudo: the agent runs as the owner of the project directory
      when that is not root, else as 1000:1000 (never root), with a note.
    """
    if rootless_engine:
        return Users(agent=f"{euid}:{egid}", sidecars=None, userns="keep-id")
    sidecars = f"{euid}:{egid}"
    if euid != 0:
        return Users(agent=sidecars, sidecars=sidecars)
    if sudo_uid:
        return Users(agent=f"{sudo_uid}:{sudo_gid if sudo_gid is not None else sudo_uid}", sidecars=sidecars)
    if cwd_owner is not None and cwd_owner[0] != 0:
        return Users(agent=f"{cwd_owner[0]}:{cwd_owner[1]}", sidecars=sidecars)
    return Users(
        agent=DEFAULT_AGENT_USER,
        sidecars=sidecars,
        note=(
            f"run by root on a root-owned project: the agent runs as {DEFAULT_AGENT_USER}, "
            "so it can write /workspace only where that user may"
        ),
    )


# -- launch steps ---------------------------------------------------------------

StepKind = Literal[
    "probe",  # look for resources with this bottle's names or labels
    "check_image",  # an image the launch uses must exist
    "build_image",  # build an image (agent, per-bottle layer, project layer)
    "write_state",  # metadata, launcher record, egress policy
    "mint_cas",  # the bottle's CAs (a few tens of ms of RSA key generation)
    "agent_files",  # what the agent's image holds -> its passwd, CA bundle, home
    "create_network",
    "create_container",
    "deliver_secrets",  # copy a sidecar's secrets file into it, before it starts
    "start_container",
    "wait_ready",  # a sidecar accepts connections
]

# What a step creates, if anything; the launcher records it before trying.
CreatedKind = Literal["image", "state", "network", "container"]


class Step(msgspec.Struct, frozen=True):
    """One step of a launch. ``index`` counts from 1 in a valid serial order;
    ``needs`` are the indices that must finish first."""

    index: int
    kind: StepKind
    target: str
    role: str = ""
    needs: tuple[int, ...] = ()

    def describe(self) -> str:
        words = {
            "probe": "look for leftovers of",
            "check_image": "check image",
            "build_image": "build image",
            "write_state": "write the state of",
            "mint_cas": "mint the CAs of",
            "agent_files": "prepare the agent's files from",
            "create_network": "create network",
            "create_container": "create container",
            "deliver_secrets": "hand the secrets to",
            "start_container": "start container",
            "wait_ready": "wait until ready:",
        }
        return f"{words[self.kind]} {self.target}"


class _PlanView(msgspec.Struct, frozen=True):
    """The part of a ``LaunchPlan`` the steps depend on (keeps this module free of plan imports)."""

    identity: str
    images: tuple[tuple[str, str, str], ...]  # (role, tag, action)
    networks: tuple[str, ...]
    sidecars: tuple[tuple[str, str, bool], ...]  # (role, name, has secrets)
    agent: str
    agent_image: str


def _view(plan: object) -> _PlanView:
    images = tuple((s.role, s.tag, s.action) for s in plan.images)  # type: ignore[attr-defined]
    containers = plan.containers  # type: ignore[attr-defined]
    agent = next(c for c in containers if c.role == naming.ROLE_AGENT)
    sidecars = tuple(
        (c.role, c.name, any(v.source == "secret" for v in c.env)) for c in containers if c.role != naming.ROLE_AGENT
    )
    return _PlanView(
        identity=plan.identity,  # type: ignore[attr-defined]
        images=images,
        networks=tuple(n.name for n in plan.networks),  # type: ignore[attr-defined]
        sidecars=sidecars,
        agent=agent.name,
        agent_image=plan.agent_image,  # type: ignore[attr-defined]
    )


# Sidecars whose proxy reaches another sidecar by name: on Podman an internal
# network has no DNS and a container learns its peers (in /etc/hosts) when it
# is created, so the one it talks to must be running by then.
SIDECAR_UPSTREAMS = {naming.ROLE_EGRESS_PROXY: naming.ROLE_GUARD}


def launch_steps(plan: object) -> tuple[Step, ...]:
    """The steps that bring up the bottle ``plan`` (a ``LaunchPlan``), in a valid serial order.

    Dependencies: nothing is created before the probe passes and every image
    is there (bad input creates nothing); the state (with the launcher
    record) exists before any engine resource, so ``cleanup`` can tell a
    launch in progress from a leftover; a sidecar's upstream runs before it
    is created; every sidecar runs before the agent container is created
    (Podman writes running peers into its /etc/hosts) and is ready before
    the launcher starts the agent, which is not a step: the run follows them.
    """
    view = _view(plan)
    steps: list[Step] = []

    def add(kind: StepKind, target: str, role: str = "", needs: Iterable[int] = ()) -> int:
        index = len(steps) + 1
        steps.append(Step(index, kind, target, role, tuple(sorted(set(needs)))))
        return index

    probe = add("probe", view.identity)
    image_steps: list[int] = []
    previous_build: int | None = None
    agent_image_step = probe
    for role, tag, action in view.images:
        if action == "build":
            # Each agent layer builds on the one before it.
            needs = [probe] + ([previous_build] if previous_build else [])
            previous_build = add("build_image", tag, role, needs)
            image_steps.append(previous_build)
            if role == naming.ROLE_AGENT:
                agent_image_step = previous_build
        else:
            index = add("check_image", tag, role, [probe])
            image_steps.append(index)
            if role == naming.ROLE_AGENT and previous_build is None:
                agent_image_step = index
    state = add("write_state", view.identity, "", image_steps or [probe])
    cas = add("mint_cas", view.identity, "", [state])
    files = add("agent_files", view.agent_image, naming.ROLE_AGENT, [cas, agent_image_step])
    networks = [add("create_network", name, "", [state]) for name in view.networks]

    started: dict[str, int] = {}
    ready: list[int] = []
    for role, name, has_secrets in view.sidecars:
        needs = [*networks, cas]
        upstream = SIDECAR_UPSTREAMS.get(role)
        if upstream in started:
            needs.append(started[upstream])
        created = add("create_container", name, role, needs)
        before_start = add("deliver_secrets", name, role, [created]) if has_secrets else created
        started[role] = add("start_container", name, role, [before_start])
        ready.append(add("wait_ready", name, role, [started[role]]))
    add("create_container", view.agent, naming.ROLE_AGENT, [files, *networks, *started.values()])
    return tuple(steps)


def steps_ready(steps: Sequence[Step], done: Iterable[int], running: Iterable[int] = ()) -> list[Step]:
    """Steps not done nor running whose needs are all done, in index order."""
    finished = set(done)
    busy = set(running)
    return [s for s in steps if s.index not in finished and s.index not in busy and set(s.needs) <= finished]


# -- teardown ---------------------------------------------------------------------


class Created(msgspec.Struct, frozen=True):
    """Something a launch created (or was about to create when it stopped)."""

    kind: CreatedKind
    name: str
    role: str = ""


def teardown_waves(created: Sequence[Created], *, agent_exited: bool = False) -> tuple[tuple[Created, ...], ...]:
    """What to remove, wave by wave; the items of one wave may go at the same time.

    Reverse order of creation by kind: the agent first (nothing of it may
    outlive its proxies), then the other containers, the networks, the
    images this launch built for this bottle, and the state last. Once the
    agent has exited there is nothing to outlive: its container goes with
    the others. Duplicates (a retried step) appear once.
    """
    unique: list[Created] = []
    for item in reversed(created):
        if item not in unique:
            unique.append(item)
    agent = tuple(c for c in unique if c.kind == "container" and c.role == naming.ROLE_AGENT)
    others = tuple(c for c in unique if c.kind == "container" and c.role != naming.ROLE_AGENT)
    if agent_exited:
        agent, others = (), agent + others
    waves = [
        agent,
        others,
        tuple(c for c in unique if c.kind == "network"),
        tuple(c for c in unique if c.kind == "image"),
        tuple(c for c in unique if c.kind == "state"),
    ]
    return tuple(w for w in waves if w)


# -- the orphan probe ---------------------------------------------------------------


class FoundResource(msgspec.Struct, frozen=True):
    """A container or network the probe found by name or by identity label."""

    kind: Literal["container", "network", "image"]
    name: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    status: str = ""


class BottleInUse(InputError):
    """Resources of this bottle identity already exist (running, or left behind)."""


class NameTaken(InputError):
    """A resource bottle would create has a name that something else already uses."""


class OrphanVerdict(msgspec.Struct, frozen=True):
    """``kind``: ``ok`` (nothing in the way), ``running`` (the bottle is in use),
    ``leftover`` (resources of it remain) or ``name-taken`` (something else
    holds a name the launch needs). ``message`` and ``hint`` are for people."""

    kind: Literal["ok", "running", "leftover", "name-taken"]
    message: str = ""
    hint: str = ""
    names: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def error(self) -> InputError:
        """The error to raise for a verdict that is not ok."""
        if self.kind == "ok":
            raise ValueError("the probe found nothing; there is no error to raise")
        if self.kind == "name-taken":
            return NameTaken(self.message, hint=self.hint)
        return BottleInUse(self.message, hint=self.hint)


def orphan_verdict(identity: str, found: Sequence[FoundResource]) -> OrphanVerdict:
    """Decide whether a launch as ``identity`` may go ahead, given what the engine already has.

    ``found`` holds the resources carrying the identity label and those with
    the names the launch would give. A running container of the bottle means
    it is in use; other resources of it are leftovers for ``bottle cleanup``;
    a name held by something that is not this bottle's is a conflict that
    cleanup would not touch.
    """
    if not found:
        return OrphanVerdict("ok")
    ours = [r for r in found if r.labels.get(naming.LABEL_IDENTITY) == identity]
    foreign = [r for r in found if r.labels.get(naming.LABEL_IDENTITY) != identity]
    if foreign:
        names = tuple(sorted({r.name for r in foreign}))
        kinds = sorted({r.kind for r in foreign})
        return OrphanVerdict(
            "name-taken",
            message=f"a {' and a '.join(kinds)} named {', '.join(names)} already exists and is not bottle {identity}'s",
            hint="remove or rename it (`docker rm`/`podman rm`, `... network rm`), then start again",
            names=names,
        )
    names = tuple(sorted({r.name for r in ours}))
    running = any(r.kind == "container" and r.status in ("running", "restarting", "paused") for r in ours)
    if running:
        return OrphanVerdict(
            "running",
            message=f"bottle {identity} is running ({', '.join(names)})",
            hint="`bottle ls` shows running bottles; stop it first, or `bottle cleanup` if its launcher is gone",
            names=names,
        )
    return OrphanVerdict(
        "leftover",
        message=f"bottle {identity} left resources behind: {', '.join(names)}",
        hint="run `bottle cleanup` to remove them (`bottle cleanup --dry-run` lists them), then start again",
        names=names,
    )


# -- the agent's files ------------------------------------------------------------------

# Where images keep the system CA bundle, most common first.
CA_BUNDLE_PATHS = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # Alpine without ca-certificates, macOS-like
)


class ImageFacts(msgspec.Struct, frozen=True):
    """What the agent's image holds that provisioning needs (read once per image id).

    ``ca_bundle_path`` is the first of ``CA_BUNDLE_PATHS`` that exists in the
    image (None if none does); ``ca_bundle`` its content.
    """

    image_id: str
    passwd: str
    group: str
    ca_bundle_path: str | None = None
    ca_bundle: bytes = b""


class AgentFiles(msgspec.Struct, frozen=True):
    """Files the launcher writes to the state and mounts into the agent."""

    passwd: str
    group: str
    ca_bundle: bytes
    ca_bundle_target: str
    gitconfig: str


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pick_name(wanted: str, taken: set[str]) -> str:
    name = wanted
    n = 1
    while name in taken:
        n += 1
        name = f"{wanted}{n}"
    return name


def agent_files(facts: ImageFacts, user: str, bottle_ca: bytes, gitconfig: str) -> AgentFiles:
    """The agent's /etc/passwd, /etc/group and system CA bundle, derived from its image.

    ``user`` is ``uid:gid``. Its passwd entry gets ``AGENT_HOME`` as home
    (an existing entry keeps its name and shell; a missing one is added as
    ``bottle``), so tools that look the user up (node's ``os.userInfo()``,
    ssh, a shell prompt) work for any uid. The CA bundle is the image's own
    with the bottle's CA appended: every HTTPS connection the agent makes
    is re-signed by it.
    """
    uid, _, gid = user.partition(":")
    gid = gid or uid
    passwd = _entries(facts.passwd)
    group = _entries(facts.group)
    shell = next((p[6] for p in passwd if len(p) >= 7 and p[2] == "0"), "/bin/sh") or "/bin/sh"
    lines: list[str] = []
    found = False
    for entry in passwd:
        if len(entry) >= 7 and entry[2] == uid:
            entry = entry[:5] + [AGENT_HOME] + entry[6:7]
            entry[3] = gid
            found = True
        lines.append(":".join(entry))
    if not found:
        name = _pick_name(AGENT_USER_NAME, {p[0] for p in passwd})
        lines.append(f"{name}:x:{uid}:{gid}:bottle agent:{AGENT_HOME}:{shell}")
    group_lines = [":".join(g) for g in group]
    if not any(len(g) >= 3 and g[2] == gid for g in group):
        group_lines.append(f"{_pick_name(AGENT_USER_NAME, {g[0] for g in group})}:x:{gid}:")
    bundle = facts.ca_bundle
    if bundle and not bundle.endswith(b"\n"):
        bundle += b"\n"
    return AgentFiles(
        passwd="\n".join(lines) + "\n",
        group="\n".join(group_lines) + "\n",
        ca_bundle=bundle + bottle_ca.rstrip(b"\n") + b"\n",
        ca_bundle_target=facts.ca_bundle_path or CA_BUNDLE_PATHS[0],
        gitconfig=gitconfig,
    )


GITCONFIG_BEGIN = "# >>> bottle: this block is rewritten at every launch >>>"
GITCONFIG_END = "# <<< bottle <<<"


def gitconfig_text(rewrites: str, existing: str = "") -> str:
    """The agent's ``~/.gitconfig``: bottle's block, then whatever else the file holds.

    ``rewrites`` is ``bottle.core.gitgate.gitconfig_rewrites`` of the plan's
    remotes (every spelling of each upstream sent to the git gate). The
    block also sets ``safe.directory``: the project belongs to the agent's
    own uid, or (``--copy-cwd``) to the image, and git must not refuse it
    either way. ``existing`` is the file as the agent left it (on resume):
    its bottle block is replaced, the rest (``user.name``, aliases) kept.
    """
    kept: list[str] = []
    inside = False
    for line in existing.splitlines():
        if line.strip() == GITCONFIG_BEGIN:
            inside = True
        elif line.strip() == GITCONFIG_END and inside:
            inside = False
        elif not inside:
            kept.append(line)
    block = [GITCONFIG_BEGIN, "[safe]", "\tdirectory = *"]
    block += rewrites.splitlines()
    block.append(GITCONFIG_END)
    rest = "\n".join(kept).strip("\n")
    return "\n".join(block) + "\n" + (rest + "\n" if rest else "")


def project_dockerfile(user: str) -> str:
    """The generated Dockerfile of a ``--copy-cwd`` layer: the project at /workspace, owned by ``user``."""
    return (
        "# Generated by bottle: the project, copied (the host directory stays untouched).\n"
        "ARG BASE\n"
        "FROM ${BASE}\n"
        f"COPY --chown={user} project/ /workspace/\n"
    )


def build_cache_key(dockerfile: bytes, base_id: str, context: Sequence[tuple[str, int, int]]) -> str:
    """A key that changes whenever a Dockerfile build could give another image.

    ``context`` lists ``(path, size, mtime_ns)`` of every file in the build
    context; ``base_id`` is the id of the image passed as ``BASE``.
    """
    digest = hashlib.sha256()
    digest.update(dockerfile)
    digest.update(b"\0" + base_id.encode())
    for path, size, mtime in sorted(context):
        digest.update(f"\0{path}\0{size}\0{mtime}".encode())
    return digest.hexdigest()[:32]


# -- attaching a terminal ----------------------------------------------------------------


def attach_argv(runtime: str, address: str, container: str, *, remote: bool = True) -> list[str]:
    """The engine CLI command that starts ``container`` with the terminal attached.

    Only the interactive terminal goes through the CLI (it handles raw mode,
    resizing and detach keys); everything else uses the API. ``address`` is
    the API socket the adapter talks to, so both reach the same engine.
    """
    if runtime == "docker":
        return ["docker", "-H", address, "start", "--attach", "--interactive", container]
    if runtime == "podman":
        argv = ["podman"]
        if remote and address:
            argv += ["--remote", "--url", address]
        return argv + ["start", "--attach", "--interactive", container]
    raise ValueError(f"no terminal attach for runtime {runtime!r}")


# -- the launcher record ------------------------------------------------------------------


class LauncherRecord(msgspec.Struct, frozen=True):
    """The process that launched a bottle: ``cleanup`` leaves its bottle alone while it lives."""

    pid: int
    host: str
    boot_id: str = ""
    runtime: str = ""
    address: str = ""
    # When the process started (clock ticks since boot, /proc/<pid>/stat):
    # a pid reused by another process does not count as the launcher.
    start_ticks: int = 0


# -- cleanup and ls ------------------------------------------------------------------------


class StateFacts(msgspec.Struct, frozen=True):
    """What the host knows about one identity's state directory."""

    identity: str
    metadata: BottleMetadata | None = None
    preserved: bool = False
    launcher_alive: bool = False


class CleanupPlan(msgspec.Struct, frozen=True):
    """What ``bottle cleanup`` removes, by kind, and the bottles it leaves alone (with why)."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()

    def empty(self) -> bool:
        return not (self.containers or self.networks or self.images or self.states)


_LIVE = ("running", "restarting", "paused")


def _by_identity(items: Iterable[object]) -> dict[str, list[object]]:
    grouped: dict[str, list[object]] = {}
    for item in items:
        identity = item.labels.get(naming.LABEL_IDENTITY)  # type: ignore[attr-defined]
        if identity:
            grouped.setdefault(identity, []).append(item)
    return grouped


def select_cleanup(
    containers: Sequence[object],
    networks: Sequence[object],
    images: Sequence[object],
    states: Mapping[str, StateFacts],
) -> CleanupPlan:
    """Everything of every bottle that is not running, plus stale state.

    ``containers``/``networks``/``images`` are the engine's resources labelled
    ``io.bottle.managed`` (``ContainerInfo``/``NetworkInfo``/``ImageInfo``);
    only those with an identity label belong to a bottle (shared images such
    as the sidecars' are never selected). A bottle is running when its
    launcher process is alive or, when this host has no state of it (another
    user's), when any container of it runs. State is removed with its
    bottle unless it is marked preserved (a resume is pending).
    """
    by_container = _by_identity(containers)
    by_network = _by_identity(networks)
    by_image = _by_identity(images)
    identities = sorted(set(by_container) | set(by_network) | set(by_image) | set(states))
    remove_c: list[str] = []
    remove_n: list[str] = []
    remove_i: list[str] = []
    remove_s: list[str] = []
    cleaned: list[str] = []
    kept: list[tuple[str, str]] = []
    for identity in identities:
        facts = states.get(identity)
        live = [c for c in by_container.get(identity, []) if c.status in _LIVE]  # type: ignore[attr-defined]
        if facts is not None and facts.launcher_alive:
            kept.append((identity, "running (its launcher is alive)"))
            continue
        if facts is None and live:
            kept.append((identity, "running, started by another user or host (no state here)"))
            continue
        remove_c += [c.name for c in by_container.get(identity, [])]  # type: ignore[attr-defined]
        remove_n += [n.name for n in by_network.get(identity, [])]  # type: ignore[attr-defined]
        remove_i += [(i.tags[0] if i.tags else i.id) for i in by_image.get(identity, [])]  # type: ignore[attr-defined]
        if facts is not None:
            if facts.preserved:
                kept.append((identity, f"state preserved for `bottle resume {identity}`"))
            else:
                remove_s.append(identity)
        if identity in by_container or identity in by_network or identity in by_image or identity in remove_s:
            cleaned.append(identity)
    return CleanupPlan(
        containers=tuple(remove_c),
        networks=tuple(remove_n),
        images=tuple(remove_i),
        states=tuple(remove_s),
        identities=tuple(cleaned),
        kept=tuple(kept),
    )


class LsRow(msgspec.Struct, frozen=True):
    """One bottle in ``bottle ls``. ``age_seconds`` is None when no state says when it started."""

    identity: str
    agent: str
    runtime: str
    status: str
    age_seconds: int | None
    containers: dict[str, str]
    cwd: str = ""


def ls_rows(containers: Sequence[object], states: Mapping[str, StateFacts], now: datetime) -> list[LsRow]:
    """One row per bottle seen in the engine (``containers`` labelled ours) or in the state.

    ``status``: ``running`` (the agent container runs), ``starting`` (the
    launcher lives, the agent does not run yet), ``orphaned`` (the agent
    runs but its launcher is gone: nothing will take it down), ``preserved``
    (state kept for resume), ``stopped`` (something is left: see ``bottle cleanup``).
    """
    grouped = _by_identity(containers)
    rows = []
    for identity in sorted(set(grouped) | set(states)):
        facts = states.get(identity)
        meta = facts.metadata if facts is not None else None
        mine = grouped.get(identity, [])
        roles = {c.labels.get(naming.LABEL_ROLE, "?"): c.status for c in mine}  # type: ignore[attr-defined]
        agent_name = meta.agent_name if meta else next(
            (c.labels.get(naming.LABEL_AGENT, "") for c in mine), ""  # type: ignore[attr-defined]
        )
        if roles.get(naming.ROLE_AGENT) in _LIVE:
            status = "orphaned" if facts is not None and not facts.launcher_alive else "running"
        elif facts is not None and facts.launcher_alive:
            status = "starting"
        elif facts is not None and facts.preserved:
            status = "preserved"
        else:
            status = "stopped"
        age = None
        if meta is not None:
            age = max(0, int((now - meta.started_at).total_seconds()))
        rows.append(
            LsRow(
                identity=identity,
                agent=agent_name,
                runtime=meta.runtime if meta else "",
                status=status,
                age_seconds=age,
                containers=dict(sorted(roles.items())),
                cwd=meta.cwd if meta else "",
            )
        )
    return rows


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def render_ls(rows: Sequence[LsRow]) -> str:
    """``bottle ls`` as a table (one line per bottle), ending in a newline."""
    if not rows:
        return "no bottles\n"
    table = [("IDENTITY", "AGENT", "RUNTIME", "STATUS", "AGE", "CONTAINERS")]
    for row in rows:
        states = ", ".join(f"{role}:{status}" for role, status in row.containers.items()) or "-"
        table.append((row.identity, row.agent or "-", row.runtime or "-", row.status, _age(row.age_seconds), states))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])) + "  " + r[-1] for r in table]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def shell_words(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line, for messages."""
    return " ".join(shlex.quote(a) for a in argv)


def state_relpath(*parts: str) -> str:
    """A state path from parts (``/``-joined, no empty parts)."""
    return posixpath.join(*parts)

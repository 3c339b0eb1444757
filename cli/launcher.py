"""The launcher: applies a ``LaunchPlan`` through the ports, and takes the bottle down again.

``bottle.core.lifecycle`` decides the steps and their order; this module does
them. Every resource is recorded in the ledger *before* the call that
creates it, so a failure or an interrupt at any point tears down exactly
what this launch made (a record of something never made costs one NotFound).

Interrupts: while launching, SIGINT and SIGTERM only set a flag that is
checked at every step boundary and inside every wait, so no engine call is
cut in half; the launch then stops, waits for the steps in flight, and
tears down. During teardown they are ignored (with a note). While the
agent runs non-interactively, they stop it. An interactive terminal passes
Ctrl-C to the agent itself, as a normal shell does.

Test hook: ``BOTTLE_TEST_INTERRUPT_AFTER_STEP=N`` sends this process SIGINT
right after step N finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import FrameType

import msgspec

from bottle.core import naming
from bottle.core.gitgate import gitconfig_rewrites
from bottle.core.images import BASE_ARG
from bottle.core.lifecycle import (
    CA_BUNDLE_PATHS,
    LAUNCHER_RECORD,
    Created,
    FoundResource,
    ImageFacts,
    LauncherRecord,
    Step,
    Users,
    agent_files,
    attach_argv,
    build_cache_key,
    gitconfig_text,
    launch_steps,
    orphan_verdict,
    project_dockerfile,
    ready_probe,
    steps_ready,
    teardown_waves,
)
from bottle.core.plan import (
    AGENT_BUNDLE_STATE,
    AGENT_GROUP_STATE,
    AGENT_PASSWD_STATE,
    BUILD_CONTEXT_STATE,
    HOME_STATE_DIR,
    PLACEHOLDER_TOKEN,
    POLICY_STATE_DIR,
    SIDECAR_PORT,
    ContainerPlan,
    ImageStep,
    LaunchPlan,
    gate_remotes,
)
from bottle.adapters.local.project_copy import copy_project
from bottle.core.proposals import BUILD_NETWORK_MARKER, SUPERVISE_SETTINGS, encode_settings, supervise_settings
from bottle.core.state import (
    METADATA,
    PRESERVE_MARKER,
    BottleMetadata,
    decide_launch_state,
    decide_session_end,
    encode_metadata,
)
from bottle.ports.clock import Clock
from bottle.ports.errors import BottleError, InputError, NotFound, RuntimeFailure
from bottle.ports.runtime import (
    BuildRequest,
    ContainerRuntime,
    ContainerSpec,
    FileEntry,
    Mount,
    NetworkAttachment,
    NetworkSpec,
    ProgressEvent,
)
from bottle.ports.state import StateStore

INTERRUPT_HOOK_ENV = "BOTTLE_TEST_INTERRUPT_AFTER_STEP"
POLICY_FILE = f"{POLICY_STATE_DIR}/egress.json"
# Temporary host grants of approved proposals: they last one session.
GRANTS_FILE = f"{POLICY_STATE_DIR}/grants.json"
CLAUDE_CONFIG = f"{HOME_STATE_DIR}/.claude.json"
LABEL_BUILD_KEY = "io.bottle.build-key"
READY_TIMEOUT = 60.0
MAX_PARALLEL = 4
EXIT_INTERRUPTED = 130


class Interrupted(BottleError):
    """The launch or the run was interrupted (Ctrl-C, SIGTERM)."""

    exit_code = EXIT_INTERRUPTED


class ImageMissing(InputError):
    """An image the launch uses is not in the engine."""


class SidecarFailed(RuntimeFailure):
    """A sidecar exited or never became ready."""


# -- interrupts -------------------------------------------------------------------


class Interrupts:
    """SIGINT/SIGTERM as a flag while launching, ignored while tearing down.

    Only the main thread can install handlers; elsewhere (an embedding
    program's worker thread) the flag is still there but only ``set`` trips it.
    """

    def __init__(self) -> None:
        self.flag = threading.Event()
        self._previous: dict[int, object] = {}
        self._tearing_down = False
        self.on_ignored: Callable[[], None] | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._tearing_down:
            if self.on_ignored is not None:
                self.on_ignored()
            return
        self.flag.set()

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def check(self) -> None:
        if self.flag.is_set():
            raise Interrupted("interrupted", hint="everything this launch created has been removed")

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Ignore the signals for the duration (teardown must finish)."""
        self._tearing_down = True
        try:
            yield
        finally:
            self._tearing_down = False

    @contextlib.contextmanager
    def passed_through(self) -> Iterator[None]:
        """Ignore SIGINT in this process while a child owns the terminal (it gets Ctrl-C itself)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


# -- the ledger -----------------------------------------------------------------------


class Ledger:
    """What this launch created (or was about to create), in order; safe across threads."""

    def __init__(self) -> None:
        self._items: list[Created] = []
        self._lock = threading.Lock()

    def record(self, kind: str, name: str, role: str = "") -> None:
        with self._lock:
            self._items.append(Created(kind, name, role))  # type: ignore[arg-type]

    def items(self) -> list[Created]:
        with self._lock:
            return list(self._items)

    def has_engine_resources(self) -> bool:
        return any(c.kind != "state" for c in self.items())


# -- host facts -----------------------------------------------------------------------


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process from /proc, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def launcher_alive(record: LauncherRecord) -> bool:
    """True if the process that wrote ``record`` still runs on this host (same boot, same process)."""
    if record.host != socket.gethostname():
        return False
    if record.boot_id and boot_id() and record.boot_id != boot_id():
        return False
    if record.pid == os.getpid():
        return True
    state = process_state(record.pid)
    if state is None:
        try:
            os.kill(record.pid, 0)  # no /proc here: ask the kernel
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    letter, started = state
    if letter in ("Z", "X"):  # a zombie nobody reaped is not a launcher
        return False
    return not record.start_ticks or started == record.start_ticks


def _context_listing(context_dir: str) -> list[tuple[str, int, int]]:
    listing = []
    for root, dirs, files in os.walk(context_dir):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                listing.append((os.path.relpath(path, context_dir), st.st_size, st.st_mtime_ns))
    return listing


# -- what a launch needs ------------------------------------------------------------------


@dataclass
class LaunchInputs:
    """Everything the launcher needs besides the ports.

    ``secrets`` maps token_ref to value (read by the caller through the
    ``SecretSource`` port); ``env_values`` the manifest's env values of the
    agent; ``policy`` the egress policy file's bytes; ``resume`` says the
    state already exists (it is then not the launch's to create).
    """

    plan: LaunchPlan
    metadata: BottleMetadata
    users: Users
    secrets: Mapping[str, str] = field(default_factory=dict)
    env_values: Mapping[str, str] = field(default_factory=dict)
    policy: bytes = b""
    resume: bool = False
    # bottle.supervise_token_refs: what an add-route proposal may name.
    supervise_token_refs: tuple[str, ...] = ()


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class Launcher:
    """Brings one bottle up (``launch``), runs its agent (``run``) and takes it down (``teardown``)."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        store: StateStore,
        clock: Clock,
        inputs: LaunchInputs,
        *,
        interrupts: Interrupts | None = None,
        say: Say = _quiet,
        on_step: Callable[[Step, int], None] | None = None,
        on_build: Callable[[str], contextlib.AbstractContextManager[Callable[[ProgressEvent], None]]] | None = None,
        cache_dir: str | None = None,
        interrupt_after: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.inputs = inputs
        self.plan = inputs.plan
        self.identity = inputs.plan.identity
        self.interrupts = interrupts or Interrupts()
        self.say = say
        self.on_step = on_step
        self.on_build = on_build
        self.cache_dir = cache_dir
        self.interrupt_after = interrupt_after
        self.ledger = Ledger()
        self.steps = launch_steps(self.plan)
        self.bundle_target = CA_BUNDLE_PATHS[0]
        self.launched = False
        self.agent_exited = False
        self.timings: dict[str, float] = {}

    # -- launch -------------------------------------------------------------------
    def launch(self) -> None:
        """Do every step; on any failure or interrupt raise after the steps in flight finish.

        The caller tears down (``teardown``) whatever happens.
        """
        started = time.monotonic()
        done: set[int] = set()
        running: dict[Future[None], Step] = {}
        error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="bottle-launch")
        try:
            while True:
                stopping = error is not None or self.interrupts.flag.is_set()
                if not stopping:
                    busy = [s.index for s in running.values()]
                    for step in steps_ready(self.steps, done, busy):
                        running[pool.submit(self._do, step)] = step
                if not running:
                    break
                finished, _ = wait(list(running), timeout=0.1, return_when=FIRST_COMPLETED)
                for future in finished:
                    step = running.pop(future)
                    exc = future.exception()
                    if exc is not None:
                        error = error or exc
                        continue
                    done.add(step.index)
                    if self.on_step is not None:
                        self.on_step(step, len(self.steps))
                    if self.interrupt_after == step.index:
                        print(
                            f"bottle: test hook: interrupting after step {step.index} of {len(self.steps)}",
                            file=sys.stderr,
                            flush=True,
                        )
                        os.kill(os.getpid(), signal.SIGINT)
                        # A handler runs in the main thread "soon"; make it now.
                        if threading.current_thread() is not threading.main_thread():
                            self.interrupts.flag.set()
        finally:
            pool.shutdown(wait=True)
        if error is not None:
            raise error
        self.interrupts.check()
        if len(done) != len(self.steps):  # pragma: no cover - the graph has no cycles
            raise RuntimeError("launch steps left undone")
        self.timings["launch"] = time.monotonic() - started
        self.launched = True
        # The bottle is up: a stale preserve marker (a change being applied now) goes.
        for relpath in decide_launch_state(self.store.list_dir(self.identity, "")):
            self.store.delete(self.identity, relpath)

    def _do(self, step: Step) -> None:
        self.interrupts.check()
        handler = getattr(self, f"_step_{step.kind}")
        handler(step)

    # -- steps --------------------------------------------------------------------
    def _step_probe(self, step: Step) -> None:
        labels = {naming.LABEL_IDENTITY: self.identity}
        found: list[FoundResource] = []
        for c in self.runtime.list_containers(labels):
            found.append(FoundResource("container", c.name, dict(c.labels), c.status))
        for n in self.runtime.list_networks(labels):
            found.append(FoundResource("network", n.name, dict(n.labels)))
        known = {r.name for r in found}
        for container in self.plan.containers:
            if container.name in known:
                continue
            with contextlib.suppress(NotFound):
                c = self.runtime.inspect_container(container.name)
                found.append(FoundResource("container", c.name or container.name, dict(c.labels), c.status))
        # A network of that name without our labels shows up as NameConflict on create.
        verdict = orphan_verdict(self.identity, found)
        if not verdict.ok:
            raise verdict.error()

    def _step_check_image(self, step: Step) -> None:
        if self.runtime.image_exists(step.target):
            return
        flag = f"--runtime {self.runtime.name}"
        if step.role == naming.ROLE_AGENT:
            hint = (
                f"build or pull it into {self.runtime.name} (e.g. `{self.runtime.name} build -t {step.target} ...`), "
                "or give the agent a `dockerfile` instead of an `image`"
            )
        else:
            hint = f"build the sidecar images: `bottle {flag} images build`"
        raise ImageMissing(f"image {step.target} ({step.role}) is not in {self.runtime.name}", hint=hint)

    def _image_step(self, tag: str) -> ImageStep:
        return next(s for s in self.plan.images if s.tag == tag)

    def _step_build_image(self, step: Step) -> None:
        image = self._image_step(step.target)
        ours = image.labels.get(naming.LABEL_IDENTITY) == self.identity
        base = image.base or ""
        if base and not self.runtime.image_exists(base):
            raise ImageMissing(
                f"the base image {base} of {image.tag} is not in {self.runtime.name}",
                hint=f"make it with `bottle --runtime {self.runtime.name} images bootstrap`, or pull it",
            )
        work: str | None = None
        network_mode: str | None = None
        try:
            if image.dockerfile == "(generated)":
                work = tempfile.mkdtemp(prefix="bottle-project-")
                copy_project(image.context or ".", os.path.join(work, "project"))
                agent = self.plan.container(naming.ROLE_AGENT)
                user = agent.user if agent is not None and agent.user else "1000:1000"
                with open(os.path.join(work, "Dockerfile"), "w", encoding="utf-8") as fh:
                    fh.write(project_dockerfile(user))
                context, dockerfile = work, "Dockerfile"
            elif ours:
                # The per-bottle Dockerfile of an approved capability change: built in a
                # context holding a copy of it and nothing else (never the state itself).
                context, dockerfile = self._per_bottle_context(image), "Dockerfile"
                work = context
                # An agent wrote this Dockerfile: its RUN steps get the network only if
                # the person who approved it said so (`approve --build-network`).
                if not self.store.exists(self.identity, BUILD_NETWORK_MARKER):
                    network_mode = "none"
            else:
                dockerfile_path = image.dockerfile or ""
                context = image.context or os.path.dirname(dockerfile_path)
                dockerfile = os.path.relpath(dockerfile_path, context)
                if not os.path.isfile(dockerfile_path):
                    raise InputError(
                        f"the Dockerfile {dockerfile_path} of agent {self.plan.agent} does not exist",
                        hint="fix the agent's `dockerfile` (a path relative to the manifest that declares it)",
                    )
            labels = dict(image.labels)
            if not ours:
                # A shared image (one per agent): rebuilt only when its inputs change.
                with open(os.path.join(context, dockerfile), "rb") as fh:
                    text = fh.read()
                base_id = self.runtime.inspect_image(base).id if base else ""
                key = build_cache_key(text, base_id, _context_listing(context))
                labels[LABEL_BUILD_KEY] = key
                with contextlib.suppress(NotFound):
                    if self.runtime.inspect_image(image.tag).labels.get(LABEL_BUILD_KEY) == key:
                        return
            else:
                self.ledger.record("image", image.tag, step.role)
            request = BuildRequest(
                context_dir=context,
                dockerfile=dockerfile,
                tag=image.tag,
                build_args={BASE_ARG: base} if base else {},
                labels=labels,
                network_mode=network_mode,
            )
            self._build(request)
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def _per_bottle_context(self, image: ImageStep) -> str:
        """The state's ``build/`` directory, emptied, with only a copy of ``image.dockerfile`` in it."""
        context = self.store.host_path(self.identity, BUILD_CONTEXT_STATE)
        if image.context and os.path.normpath(image.context) != os.path.normpath(context):
            raise ValueError(f"the per-bottle image builds in {context}, not {image.context}")
        try:
            with open(image.dockerfile or "", "rb") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise InputError(
                f"the per-bottle Dockerfile {image.dockerfile} of bottle {self.identity} is gone",
                hint="a resume rebuilds the image from it; `bottle cleanup` removes the bottle's state",
            ) from None
        if os.path.lexists(context):
            if os.path.isdir(context) and not os.path.islink(context):
                shutil.rmtree(context)
            else:
                os.unlink(context)
        os.makedirs(context, mode=0o700)
        with open(os.path.join(context, "Dockerfile"), "wb") as fh:
            fh.write(text)
        return context

    def _build(self, request: BuildRequest) -> None:
        def check(report: Callable[[ProgressEvent], None]) -> Callable[[ProgressEvent], None]:
            def on_progress(event: ProgressEvent) -> None:
                self.interrupts.check()
                report(event)

            return on_progress

        if self.on_build is None:
            self.runtime.build_image(request, on_progress=check(lambda e: None))
            return
        with self.on_build(f"building {request.tag}") as report:
            self.runtime.build_image(request, on_progress=check(report))

    def _step_write_state(self, step: Step) -> None:
        if not self.inputs.resume:
            self.ledger.record("state", self.identity)
        store, identity = self.store, self.identity
        store.write(identity, METADATA, encode_metadata(self.inputs.metadata))
        record = LauncherRecord(
            pid=os.getpid(),
            host=socket.gethostname(),
            boot_id=boot_id(),
            runtime=self.runtime.name,
            address=str(getattr(self.runtime, "address", "")),
            start_ticks=(process_state(os.getpid()) or ("", 0))[1],
        )
        store.write(identity, LAUNCHER_RECORD, msgspec.json.encode(record))
        store.write(identity, POLICY_FILE, self.inputs.policy)
        if self.plan.supervise:
            settings = supervise_settings(self.inputs.supervise_token_refs)
            store.write(identity, SUPERVISE_SETTINGS, encode_settings(settings))
        # Single-use and timed grants end with the session that had them.
        store.delete(identity, GRANTS_FILE)
        # Each sidecar mounts its own audit/<role>/: made here, as the user the
        # sidecars write as, before an engine would make it as root (or refuse).
        for directory in self.plan.audit_dirs():
            store.write(identity, f"{directory}/.keep", b"")
        supervise = self.plan.container(naming.ROLE_SUPERVISE)
        if supervise is not None:
            from bottle.adapters.local.proposal_queue import prepare_queue_dirs  # noqa: PLC0415

            prepare_queue_dirs(store, identity, supervise.user)

    def _step_mint_cas(self, step: Step) -> None:
        from bottle.adapters.tls import ensure_ca  # noqa: PLC0415 - cryptography is ~40 ms

        store, identity = self.store, self.identity
        now = self.clock.now()
        roles = [c.role for c in self.plan.containers if c.role in (naming.ROLE_GUARD, naming.ROLE_EGRESS_PROXY)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # RSA key generation: ~50 ms each
            list(pool.map(lambda role: ensure_ca(store, identity, role, now=now), roles))

    def _facts_image(self) -> str:
        agent_images = [s for s in self.plan.images if s.role == naming.ROLE_AGENT and s.dockerfile != "(generated)"]
        return agent_images[-1].tag if agent_images else self.plan.agent_image

    def _image_facts(self) -> ImageFacts:
        tag = self._facts_image()
        image_id = self.runtime.inspect_image(tag).id
        cache = None
        if self.cache_dir:
            cache = os.path.join(self.cache_dir, "image-facts", image_id.replace(":", "_") + ".json")
            with contextlib.suppress(OSError, msgspec.DecodeError):
                with open(cache, "rb") as fh:
                    return msgspec.json.decode(fh.read(), type=ImageFacts)
        probe = f"bottle-probe-{self.identity}"
        self.ledger.record("container", probe, "probe")
        # Created, never started: its files are the image's.
        self.runtime.create_container(
            ContainerSpec(
                name=probe,
                image=tag,
                command=("true",),
                labels=naming.managed_labels(self.identity, "probe", self.plan.agent),
            )
        )
        try:
            def read(path: str) -> bytes | None:
                try:
                    entries = self.runtime.copy_out(probe, path)
                except NotFound:
                    return None
                files = [e for e in entries if not e.is_dir]
                return files[0].content if len(files) == 1 else None

            passwd = read("/etc/passwd") or b""
            group = read("/etc/group") or b""
            bundle_path, bundle = None, b""
            for candidate in CA_BUNDLE_PATHS:
                content = read(candidate)
                if content is not None:
                    bundle_path, bundle = candidate, content
                    break
        finally:
            with contextlib.suppress(NotFound):
                self.runtime.remove_container(probe, force=True)
        facts = ImageFacts(
            image_id=image_id,
            passwd=passwd.decode("utf-8", "replace"),
            group=group.decode("utf-8", "replace"),
            ca_bundle_path=bundle_path,
            ca_bundle=bundle,
        )
        if cache is not None:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                tmp = f"{cache}.{os.getpid()}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(msgspec.json.encode(facts))
                os.replace(tmp, cache)
        return facts

    def _step_agent_files(self, step: Step) -> None:
        from bottle.core.state import ca_cert_path  # noqa: PLC0415

        agent = self.plan.container(naming.ROLE_AGENT)
        assert agent is not None
        facts = self._image_facts()
        ca = self.store.read(self.identity, ca_cert_path(self.plan.proxy.agent_proxy)) or b""
        store, identity = self.store, self.identity
        gitconfig = f"{HOME_STATE_DIR}/.gitconfig"
        # On resume the agent's own settings stay; bottle's block follows the plan.
        existing = (store.read(identity, gitconfig) or b"").decode("utf-8", "replace")
        rewrites = gitconfig_rewrites(gate_remotes(self.plan.git_remotes), naming.ROLE_GIT_GATE, SIDECAR_PORT)
        files = agent_files(facts, agent.user or "1000:1000", ca, gitconfig_text(rewrites, existing))
        self.bundle_target = files.ca_bundle_target
        store.write(identity, AGENT_PASSWD_STATE, files.passwd.encode())
        store.write(identity, AGENT_GROUP_STATE, files.group.encode())
        store.write(identity, AGENT_BUNDLE_STATE, files.ca_bundle)
        store.write(identity, gitconfig, files.gitconfig.encode())
        if self.plan.supervise:
            self._register_supervise_mcp()
        self._hand_home_to(agent)

    def _register_supervise_mcp(self) -> None:
        """Register the supervise sidecar's MCP server in ``~/.claude.json``, keeping the rest of it."""
        from bottle.core.proposals import claude_code_mcp_config  # noqa: PLC0415

        existing = self.store.read(self.identity, CLAUDE_CONFIG)
        try:
            data = claude_code_mcp_config(existing, f"http://{naming.ROLE_SUPERVISE}:{SIDECAR_PORT}")
        except ValueError:
            self.say("~/.claude.json of the agent is not a JSON object: the supervise tools are not registered in it")
            return
        self.store.write(self.identity, CLAUDE_CONFIG, data)

    def _hand_home_to(self, agent: ContainerPlan) -> None:
        """The agent's home in the state belongs to the agent's uid (root may launch for another user)."""
        if os.geteuid() != 0 or not agent.user or agent.userns:
            return
        uid_text, _, gid_text = agent.user.partition(":")
        if not uid_text.isdigit():
            return
        uid, gid = int(uid_text), int(gid_text or uid_text)
        home = self.store.host_path(self.identity, HOME_STATE_DIR)
        if not os.path.isdir(home):
            return
        for root, dirs, files in os.walk(home):
            for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                with contextlib.suppress(OSError):
                    os.lchown(name, uid, gid)

    def _step_create_network(self, step: Step) -> None:
        network = next(n for n in self.plan.networks if n.name == step.target)
        self.ledger.record("network", network.name, network.role)
        self.runtime.create_network(NetworkSpec(network.name, network.internal, dict(network.labels)))

    def _container_spec(self, container: ContainerPlan) -> ContainerSpec:
        env: dict[str, str] = {}
        for var in container.env:
            if var.source == "bottle" and var.value is not None:
                env[var.name] = var.value
            elif var.source == "manifest":
                env[var.name] = self.inputs.env_values.get(var.name, "")
            elif var.source == "placeholder":
                env[var.name] = PLACEHOLDER_TOKEN
            # secrets never go into env: deliver_secrets copies them in as a file
        mounts = []
        for m in container.mounts:
            target = m.target
            if container.role == naming.ROLE_AGENT and target == CA_BUNDLE_PATHS[0]:
                target = self.bundle_target
            mounts.append(Mount(m.source, target, m.read_only))
        return ContainerSpec(
            name=container.name,
            image=container.image,
            command=container.command,
            env=env,
            labels=dict(container.labels),
            networks=tuple(NetworkAttachment(a.network, a.aliases) for a in container.networks),
            mounts=tuple(mounts),
            tmpfs=dict(container.tmpfs),
            user=container.user,
            workdir=container.workdir,
            cap_drop=container.cap_drop,
            no_new_privileges=container.no_new_privileges,
            read_only_rootfs=container.read_only_rootfs,
            pids_limit=container.pids_limit,
            memory_bytes=container.memory_bytes,
            tty=container.tty,
            stdin_open=container.stdin_open,
            userns=container.userns,
            seccomp_profile=container.syscalls.profile(),
        )

    def _container(self, step: Step) -> ContainerPlan:
        return next(c for c in self.plan.containers if c.name == step.target)

    def _step_create_container(self, step: Step) -> None:
        container = self._container(step)
        self.ledger.record("container", container.name, container.role)
        self.runtime.create_container(self._container_spec(container))

    def _step_deliver_secrets(self, step: Step) -> None:
        container = self._container(step)
        if container.secrets_file is None:
            return
        values = {}
        for var in container.env:
            if var.source == "secret" and var.token_ref is not None:
                values[var.name] = self.inputs.secrets[var.token_ref]
        uid, gid = 0, 0
        if container.user:
            uid_text, _, gid_text = container.user.partition(":")
            if uid_text.isdigit():
                uid = int(uid_text)
                gid = int(gid_text) if gid_text.isdigit() else uid
        directory, name = posixpath.split(container.secrets_file)
        entry = FileEntry(path=name, content=json.dumps(values).encode(), mode=0o400, uid=uid, gid=gid)
        self.runtime.copy_in(container.name, directory, [entry])

    def _step_start_container(self, step: Step) -> None:
        self.runtime.start_container(step.target)

    def _step_wait_ready(self, step: Step) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        # Each exec waits a few seconds at most, so an interrupt is seen soon.
        probe = list(ready_probe(SIDECAR_PORT, 3, self._container(step).health_path))
        while True:
            self.interrupts.check()
            try:
                if self.runtime.exec(step.target, probe).exit_code == 0:
                    return
            except RuntimeFailure:
                pass  # not running (any more): the inspect below tells
            info = self.runtime.inspect_container(step.target)
            if info.status in ("exited", "dead"):
                raise SidecarFailed(
                    f"the {step.role} sidecar exited with code {info.exit_code} before it was ready"
                    + self._log_tail(step.target),
                    hint="the sidecar's own words are above; `bottle doctor` checks the images",
                )
            if time.monotonic() > deadline:
                raise SidecarFailed(
                    f"the {step.role} sidecar did not become ready within {READY_TIMEOUT:.0f}s"
                    + self._log_tail(step.target),
                    hint="the engine may be overloaded; try again, or check `bottle doctor`",
                )
            time.sleep(0.05)  # the probe returned early: the container is not running (yet)

    def _log_tail(self, name: str) -> str:
        try:
            lines = [line for line in self.runtime.logs(name).decode("utf-8", "replace").splitlines() if line.strip()]
        except RuntimeFailure:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    # -- run ----------------------------------------------------------------------
    def run(self, *, interactive: bool, out: Callable[[bytes], None] | None = None) -> int:
        """Start the agent and wait for it; return its exit code.

        ``interactive``: the engine CLI attaches this terminal. Otherwise the
        agent's output is copied to ``out`` (default: stdout) as it comes.
        """
        agent = self.plan.container(naming.ROLE_AGENT)
        assert agent is not None and self.launched
        if interactive:
            return self._run_attached(agent.name)
        return self._run_detached(agent.name, out or _stdout)

    def _run_attached(self, name: str) -> int:
        argv = attach_argv(self.runtime.name, str(getattr(self.runtime, "address", "")), name)
        if shutil.which(argv[0]) is None:
            raise InputError(
                f"an interactive terminal needs the `{argv[0]}` command, which is not installed",
                hint=f"install the {argv[0]} CLI, or pass a command after `--` to run without a terminal",
            )
        stopped = False
        with self.interrupts.passed_through():
            attach = subprocess.Popen(argv)
            while True:
                try:
                    code = attach.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                # Ctrl-C belongs to the terminal's shell; SIGTERM to bottle stops the agent.
                if self.interrupts.flag.is_set() and not stopped:
                    stopped = True
                    with contextlib.suppress(RuntimeFailure):
                        self.runtime.stop_container(name, timeout=5)
        if stopped:
            self.agent_exited = True
            self.interrupts.check()
        with contextlib.suppress(RuntimeFailure):
            self.agent_exited = self.runtime.inspect_container(name).status in ("exited", "dead")
        return code

    def _run_detached(self, name: str, out: Callable[[bytes], None]) -> int:
        # Polling inspect beats the engines' wait endpoint here: Podman's polls
        # the container every 250 ms, and a blocked wait cannot watch for Ctrl-C.
        self.runtime.start_container(name)
        seen = 0
        pause = 0.02
        stopped = False
        last_logs = time.monotonic()
        while True:
            info = self.runtime.inspect_container(name)
            finished = info.status in ("exited", "dead")
            # Output is copied every quarter second while it runs, and all of it at the end.
            if finished or time.monotonic() - last_logs >= 0.25:
                logs = self.runtime.logs(name)
                last_logs = time.monotonic()
                if len(logs) > seen:
                    out(logs[seen:])
                    seen = len(logs)
            if finished:
                self.agent_exited = True
                code = info.exit_code if info.exit_code is not None else self.runtime.wait_container(name)
                if stopped:
                    self.interrupts.check()
                return code
            if self.interrupts.flag.is_set() and not stopped:
                stopped = True
                self.runtime.stop_container(name, timeout=5)
                continue
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)

    # -- teardown -----------------------------------------------------------------
    def teardown(self) -> TeardownReport:
        """Remove what this launch created, in reverse order; keep the state if it is marked preserved."""
        started = time.monotonic()
        report = TeardownReport(identity=self.identity)
        with self.interrupts.shielded():
            for wave in teardown_waves(self.ledger.items(), agent_exited=self.agent_exited):
                if wave[0].kind == "state":
                    continue  # below, after the label sweep
                if wave[0].kind == "network":
                    self._remove_strays(report)
                with ThreadPoolExecutor(max_workers=MAX_PARALLEL, thread_name_prefix="bottle-teardown") as pool:
                    for item, problem in zip(wave, pool.map(self._remove, wave)):
                        if problem:
                            report.problems.append(f"{item.kind} {item.name}: {problem}")
            if self.ledger.has_engine_resources() and (report.problems or not self.launched):
                # Anything with this identity was made by this launch (the probe found
                # nothing before); catches a resource an engine made after an error.
                try:
                    self.runtime.remove_labelled({naming.LABEL_IDENTITY: self.identity})
                except (RuntimeFailure, ValueError) as exc:
                    report.problems.append(f"label sweep: {exc}")
            # A new bottle's state goes with it; a resumed one's only once the
            # relaunch was complete (a failed resume keeps what it came for).
            if any(c.kind == "state" for c in self.ledger.items()) or (self.inputs.resume and self.launched):
                try:
                    self._end_session(report)
                except OSError as exc:
                    report.problems.append(f"state {self.store.host_path(self.identity)}: {exc}")
        report.seconds = time.monotonic() - started
        self.timings["teardown"] = report.seconds
        return report

    def _remove_strays(self, report: TeardownReport) -> None:
        """Containers with this identity the ledger does not know (joined to its networks
        by someone else, or made by an engine after an error): they would keep the networks."""
        known = {c.name for c in self.ledger.items() if c.kind == "container"}
        try:
            strays = [c for c in self.runtime.list_containers({naming.LABEL_IDENTITY: self.identity})
                      if c.name not in known]
        except RuntimeFailure as exc:
            report.problems.append(f"containers of {self.identity}: {exc}")
            return
        for stray in strays:
            problem = self._remove(Created("container", stray.name))
            if problem:
                report.problems.append(f"container {stray.name}: {problem}")

    def _end_session(self, report: TeardownReport) -> None:
        preserved = self.store.exists(self.identity, PRESERVE_MARKER)
        end = decide_session_end(self.identity, preserved)
        if end.keep_state:
            report.kept_state = True
            report.resume_hint = end.resume_hint
        else:
            self.store.remove_bottle(self.identity)

    def _remove(self, item: Created) -> str | None:
        try:
            if item.kind == "container":
                self.runtime.remove_container(item.name, force=True)
            elif item.kind == "network":
                self.runtime.remove_network(item.name)
            elif item.kind == "image":
                self.runtime.remove_image(item.name, force=True)
        except NotFound:
            return None
        except (RuntimeFailure, OSError, ValueError) as exc:
            return str(exc)
        return None


@dataclass
class TeardownReport:
    identity: str
    problems: list[str] = field(default_factory=list)
    kept_state: bool = False
    resume_hint: str | None = None
    seconds: float = 0.0


def _stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()

"""End-to-end: the real ``bottle`` command against real Docker, rootful Podman and rootless Podman.

Every test runs the CLI as a separate process, the way a person would, and
checks what it did through the engine's raw SDK (the contract suite's back
doors) and the host's filesystem. Rootless Podman is driven as its own user
(``BOTTLE_ROOTLESS_USER``, default ``bottle-rootless``): its containers can
read only that user's files.

Images are built once per engine per session: the sidecars (through the same
function as ``bottle images build``, tagged ``e2e-<hash of their sources>``)
and the generic example agent. They are removed at the end unless
``BOTTLE_E2E_KEEP_IMAGES=1`` (then a later session reuses them).

Engine availability works as in ``tests/contract``: a missing engine fails
in CI (``CI=true`` or ``BOTTLE_REQUIRE_ENGINES=1``) and skips elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "contract"))

from contract_support import BASE_IMAGE, DockerBackDoor, PodmanBackDoor  # noqa: E402

from bottle.core import naming  # noqa: E402
from bottle.ports.errors import RuntimeFailure  # noqa: E402
from bottle.ports.runtime import BuildRequest, ContainerRuntime, ContainerSpec, NetworkAttachment, NetworkInfo  # noqa: E402

RUN_ID = secrets.token_hex(3)
RUN_LABEL = "io.bottle.test-run"
ENGINES = ("docker", "podman", "podman_rootless")
GENERIC_DOCKERFILE = ROOT / "docs" / "examples" / "generic" / "Dockerfile"
STUB_PORT = 8000
STUB_BODY = "hello from allowed.test"
# A stub upstream on the bottle's egress network; the guard resolves it by its alias.
STUB_SCRIPT = (
    "import http.server\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    f"        body = b'{STUB_BODY}'\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    f"http.server.ThreadingHTTPServer(('0.0.0.0', {STUB_PORT}), H).serve_forever()\n"
)


def _engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BOTTLE_REQUIRE_ENGINES") == "1"


def _unavailable(name: str, why: str) -> None:
    if _engines_required():
        pytest.fail(f"{name}: {why} (CI requires every engine; see scripts/engines.sh)", pytrace=False)
    pytest.skip(f"{name}: {why}")


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for folder in ("core", "ports", "sidecars"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


SIDECAR_VERSION = os.environ.get("BOTTLE_E2E_SIDECAR_VERSION") or f"e2e-{_sources_hash()}"
GENERIC_IMAGE = f"localhost/bottle-e2e-generic:{hashlib.sha256(GENERIC_DOCKERFILE.read_bytes()).hexdigest()[:12]}"


@dataclass
class Engine:
    """One engine under test, how to run ``bottle`` against it, and a back door to check it."""

    id: str
    runtime_flag: str
    url: str
    user: str | None  # run the CLI as this user (rootless), else as this process
    adapter: ContainerRuntime
    backdoor: Any
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    python: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Shared by the session's tests: what bottle caches per image (its facts) is
    # the same for all of them, and a probe container costs seconds on vfs.
    cache_dir: Path | None = None

    # -- running the CLI ------------------------------------------------------
    def env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTTLE_", "XDG_", "DOCKER_", "CONTAINER_"))}
        env.update(
            XDG_STATE_HOME=str(home / "state"),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_CACHE_HOME=str(self.cache_dir or home / "cache"),
            BOTTLE_SIDECAR_VERSION=SIDECAR_VERSION,
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            env.update(HOME=pw.pw_dir, USER=self.user, LOGNAME=self.user, XDG_RUNTIME_DIR=f"/run/user/{pw.pw_uid}")
        elif self.runtime_flag == "podman":
            env["BOTTLE_PODMAN_URL"] = self.url
        else:
            env["DOCKER_HOST"] = self.url
        env.update(extra or {})
        return env

    def argv(self, args: list[str], env: Mapping[str, str]) -> list[str]:
        cli = [*self.python, "--runtime", self.runtime_flag, *args]
        if self.user is None:
            return cli
        keep = [f"{k}={v}" for k, v in env.items()]
        return ["runuser", "-u", self.user, "--", "env", "-i", *keep, *cli]

    def popen(self, args: list[str], home: Path, cwd: Path, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        env = self.env(home, extra_env)
        return subprocess.Popen(
            self.argv(args, env), cwd=cwd, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # Its own process group, so a test's SIGINT reaches bottle only.
            start_new_session=True,
        )

    def run(self, args: list[str], home: Path, cwd: Path, extra_env: Mapping[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        proc = self.popen(args, home, cwd, extra_env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            raise AssertionError(f"bottle {' '.join(args)} timed out\nstdout:\n{out}\nstderr:\n{err}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # -- checking through the back door ----------------------------------------
    def leftovers(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        found = self.backdoor.labelled(labels)
        found["volumes"] = self.volumes(labels)
        return {k: v for k, v in found.items() if v}

    def volumes(self, labels: Mapping[str, str]) -> list[str]:
        pairs = [f"{k}={v}" for k, v in labels.items()]
        if isinstance(self.backdoor, DockerBackDoor):
            return [v["Name"] for v in (self.backdoor.client.api.volumes(filters={"label": pairs}) or {}).get("Volumes") or []]
        response = self.backdoor.client.api.get("/volumes/json", params={"filters": json.dumps({"label": pairs[:1]})})
        response.raise_for_status()
        return [v["Name"] for v in response.json() or [] if all((v.get("Labels") or {}).get(k) == val for k, val in labels.items())]

    def purge(self, labels: Mapping[str, str]) -> None:
        self.backdoor.purge(labels)


def _python_for(user: str | None) -> list[str]:
    """How to start this checkout's bottle as ``user``: its venv, or Debian's python3 over the venv's packages."""
    venv_bottle = Path(sys.executable).with_name("bottle")
    if user is None:
        return [str(venv_bottle)]
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    launcher = (
        "import site, sys; site.addsitedir(sys.argv[1]); sys.argv = ['bottle'] + sys.argv[2:]; "
        "from bottle.cli.main import main; main()"
    )
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for python in (os.path.realpath(sys.executable), f"/usr/bin/python{version}", "/usr/bin/python3"):
        probe = subprocess.run(
            ["runuser", "-u", user, "--", python, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            # -S: Debian's own dist-packages (an older cryptography) must not shadow the venv's.
            return [python, "-S", "-c", launcher, str(site)]
    pytest.fail(f"no python{version} that {user} may run (the venv's lives at {sys.executable})", pytrace=False)


def _make_engine(name: str) -> Engine:
    if name == "docker":
        from bottle.adapters.docker import DockerRuntime

        url = os.environ.get("BOTTLE_E2E_DOCKER_URL", "unix:///var/run/docker.sock")
        return Engine(name, "docker", url, None, DockerRuntime(base_url=url), DockerBackDoor(url))
    from bottle.adapters.podman import PodmanRuntime

    if name == "podman":
        url = os.environ.get("BOTTLE_PODMAN_URL", "unix:///run/podman/podman.sock")
        return Engine(name, "podman", url, None, PodmanRuntime(base_url=url), PodmanBackDoor(url))
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        _unavailable(name, f"no user {user} for rootless Podman")
        raise
    url = f"unix:///run/user/{pw.pw_uid}/podman/podman.sock"
    engine = Engine(name, "podman", url, user, PodmanRuntime(base_url=url), PodmanBackDoor(url))
    engine.uid, engine.gid = pw.pw_uid, pw.pw_gid
    return engine


def _build_images(engine: Engine) -> list[str]:
    from bottle.cli.images import build_sidecar_images

    built: list[str] = []
    started = time.monotonic()
    built += build_sidecar_images(engine.adapter, version=SIDECAR_VERSION)
    if not engine.adapter.image_exists(GENERIC_IMAGE):
        engine.adapter.build_image(
            BuildRequest(
                context_dir=str(GENERIC_DOCKERFILE.parent),
                tag=GENERIC_IMAGE,
                build_args={"BASE": BASE_IMAGE},
                labels={naming.LABEL_MANAGED: "true", RUN_LABEL: "e2e-images"},
            )
        )
        built.append(GENERIC_IMAGE)
    engine.timings["images"] = time.monotonic() - started
    return built


_SESSION_TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture(
    scope="session",
    params=[pytest.param(n, marks=[getattr(pytest.mark, n), pytest.mark.engine, pytest.mark.e2e], id=n) for n in ENGINES],
)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    name: str = request.param
    if os.geteuid() != 0:
        _unavailable(name, "the end-to-end suite runs as root (it drives the rootless engine as its user)")
    try:
        engine = _make_engine(name)
        info = engine.adapter.info()
    except RuntimeFailure as exc:
        _unavailable(name, f"{exc} — {exc.hint or ''}")
        raise
    except Exception as exc:  # the raw SDK back door
        _unavailable(name, f"cannot reach the engine: {exc}")
        raise
    if name == "podman_rootless" and not info.rootless:
        _unavailable(name, f"the engine at {info.address} is not rootless")
    if not engine.adapter.image_exists(BASE_IMAGE):
        _unavailable(name, f"base image {BASE_IMAGE} is missing: run `bottle --runtime {engine.runtime_flag} images bootstrap`")
    engine.python = _python_for(engine.user)
    engine.cache_dir = Path(tempfile.mkdtemp(prefix=f"bottle-e2e-cache-{RUN_ID}-{name}-"))
    os.chown(engine.cache_dir, engine.uid, engine.gid)
    built = _build_images(engine)
    started = time.monotonic()
    yield engine
    engine.timings["tests"] = time.monotonic() - started
    _SESSION_TIMINGS[name] = engine.timings
    engine.purge({RUN_LABEL: RUN_ID})
    shutil.rmtree(engine.cache_dir, ignore_errors=True)
    if os.environ.get("BOTTLE_E2E_KEEP_IMAGES") != "1":
        for tag in built:
            try:
                engine.adapter.remove_image(tag, force=True)
            except RuntimeFailure:
                pass
    engine.adapter.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, timings in _SESSION_TIMINGS.items():
        figures = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        terminalreporter.write_line(f"e2e {name}: {figures}")


# -- per test ----------------------------------------------------------------------

_counter = iter(range(1, 10_000))


@dataclass
class Bottle:
    """A place to run ``bottle`` from: a home (state, config, cache), a project and a manifest."""

    engine: Engine
    home: Path
    project: Path
    manifest: Path
    agent: str
    secret: str
    secret_prefix: str

    @property
    def state_root(self) -> Path:
        return self.home / "state" / "bottle" / "bottles"

    def run(self, *args: str, extra_env: Mapping[str, str] | None = None, timeout: float = 240,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.engine.run(list(args), self.home, cwd or self.project, self.env(extra_env), timeout)

    def popen(self, *args: str, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return self.engine.popen(list(args), self.home, self.project, self.env(extra_env))

    def env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {"BOTTLE_MANIFEST": str(self.manifest), "E2E_TOKEN": self.secret, **(extra or {})}

    def start(self, *command: str, extra_env: Mapping[str, str] | None = None, agent: str | None = None,
              timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.run("start", agent or self.agent, "-y", "--", *command, extra_env=extra_env, timeout=timeout)

    def leftovers(self) -> dict[str, list[str]]:
        return self.engine.leftovers({naming.LABEL_AGENT: self.agent})

    def states(self) -> list[str]:
        return sorted(os.listdir(self.state_root)) if self.state_root.is_dir() else []

    def write_manifest(self, agents: dict[str, Any]) -> None:
        self.manifest.write_text(json.dumps({"version": 1, "agents": agents}, indent=2))
        os.chown(self.manifest, self.engine.uid, self.engine.gid)


def agent_manifest(image: str, *, routes: bool = True, **bottle: Any) -> dict[str, Any]:
    """The test agent: the generic image, the stub upstream allowed, optionally one brokered route."""
    block: dict[str, Any] = {
        "egress": {
            "allow": ["allowed.test"],
            # The stub upstream lives on the bottle's egress network: a private address.
            "allow_private": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        },
        **bottle,
    }
    if routes:
        block["egress_proxy"] = {"routes": [{"upstream": "https://api.example.com", "token_ref": "E2E_TOKEN"}]}
    return {"image": image, "command": ["bash", "-l"], "bottle": block}


@pytest.fixture
def bottle(engine: Engine) -> Iterator[Bottle]:
    n = next(_counter)
    home = Path(tempfile.mkdtemp(prefix=f"bottle-e2e-{RUN_ID}-{n}-"))
    project = home / "project"
    project.mkdir()
    (project / "README.md").write_text("a project\n")
    prefix = f"bsek{RUN_ID}"
    b = Bottle(engine, home, project, home / "manifest.json", f"e2e-{RUN_ID}-{n}", prefix + secrets.token_hex(16), prefix)
    b.write_manifest({b.agent: agent_manifest(GENERIC_IMAGE)})
    for path in [home, *home.rglob("*")]:
        os.chown(path, engine.uid, engine.gid)
    yield b
    engine.purge({naming.LABEL_AGENT: b.agent})
    shutil.rmtree(home, ignore_errors=True)


# -- the stub upstream ------------------------------------------------------------------


def wait_for_agent(engine: Engine, agent: str, proc: subprocess.Popen[str] | None = None, timeout: float = 300) -> str:
    """Wait until the bottle's agent container runs; return its name.

    With ``proc`` (the ``bottle start`` that launches it), fail at once with
    its stderr if it ends before the agent runs.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = engine.adapter.list_containers({naming.LABEL_AGENT: agent, naming.LABEL_ROLE: naming.ROLE_AGENT})
        running = [c for c in found if c.status == "running"]
        if running:
            return running[0].name
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"bottle start ended early ({proc.returncode}):\n{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError(f"the agent of {agent} never ran")


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (an audit log)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class EgressNeighbour:
    """A container of the test's that joins the bottle's egress network as soon as it exists.

    Runs in a thread beside ``bottle start``: waits for the network, then
    ``join`` creates the container, labelled as the bottle's so that its
    teardown removes it with the network. ``error`` holds what went wrong,
    for the test to report; ``ready`` is set once ``join`` ended either way.
    """

    prefix = "neighbour"
    wait_seconds = 300.0

    def __init__(self, engine: Engine, agent: str) -> None:
        self.engine = engine
        self.agent = agent
        self.name = f"bottle-e2e-{self.prefix}-{RUN_ID}-{secrets.token_hex(3)}"
        self.identity: str | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            network = self._await_network()
            if network is not None:
                self.identity = network.labels[naming.LABEL_IDENTITY]
                self.join(network)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ready.set()

    def _await_network(self) -> NetworkInfo | None:
        labels = {naming.LABEL_AGENT: self.agent, naming.LABEL_ROLE: naming.ROLE_EGRESS_NET}
        deadline = time.monotonic() + self.wait_seconds
        while not self._stop.is_set():
            found = self.engine.adapter.list_networks(labels)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError("the bottle's egress network never appeared")
            time.sleep(0.05)
        return None  # the test ended first

    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: RUN_ID, naming.LABEL_IDENTITY: self.identity or "", naming.LABEL_AGENT: self.agent}

    def join(self, network: NetworkInfo) -> None:
        raise NotImplementedError


class Stub(EgressNeighbour):
    """An ``allowed.test`` server on the bottle's egress network."""

    prefix = "stub"
    wait_seconds = 120.0

    def __init__(self, engine: Engine, agent: str) -> None:
        super().__init__(engine, agent)
        self.secret_length: int | None = None

    def join(self, network: NetworkInfo) -> None:
        self.engine.adapter.create_container(
            ContainerSpec(
                name=self.name,
                image=BASE_IMAGE,
                command=("python3", "-c", STUB_SCRIPT),
                labels=self.labels(),
                networks=(NetworkAttachment(network.name, ("allowed.test",)),),
            )
        )
        self.engine.adapter.start_container(self.name)
        self._check_the_proxy_holds_the_secret()

    def _check_the_proxy_holds_the_secret(self) -> None:
        """The brokered secret is in the bottle (in the egress proxy), just not in the agent."""
        proxy = naming.resource_name(naming.ROLE_EGRESS_PROXY, self.identity or "")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                result = self.engine.adapter.exec(
                    proxy, ["python3", "-c", "import json; print(len(json.load(open('/run/bottle-secrets.json'))['BOTTLE_TOKEN_0']))"]
                )
            except RuntimeFailure:
                time.sleep(0.1)
                continue
            if result.exit_code == 0:
                self.secret_length = int(result.stdout.strip())
                return
            time.sleep(0.1)


@pytest.fixture
def stub(engine: Engine) -> Callable[[str], Stub]:
    return lambda agent: Stub(engine, agent)

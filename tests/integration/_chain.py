"""One bottle's egress chain on a real engine, for tests/integration/test_egress_chain.py and benchmarks/egress_chain.py.

``ChainWorld`` builds, through our ``ContainerRuntime`` adapters, what
``core/plan.py`` plans for a bottle with a route, plus a test upstream:

- the bottle's two networks: internal (``internal=True``) and egress;
- ``stub``: ``egress_stub.py`` on the egress network only, answering over
  TLS as ``api.example.test`` with a certificate from a test CA;
- ``guard``: internal (alias ``guard``) and egress; its CA, the policy file,
  the brokered secret in the secrets file, the test CA as the extra CA
  bundle, the audit directory — at the paths the launch plan mounts them;
- ``egress-proxy``: internal (alias ``egress-proxy``) and egress, upstream
  ``http://guard:8080``, trusting the guard's CA, holding the route's secret;
- ``client``: the internal network only, ``HTTPS_PROXY`` at the egress
  proxy, trusting the egress proxy's CA; git and python3, no secret;
- optionally ``direct``: a client on the egress network that reaches the
  stub without any proxy (the benchmark's baseline).

Files reach the containers with ``copy_in`` before they start (bind mounts
of root-owned 0600 keys do not work for rootless Podman); owners and modes
are those the launcher gives them. Every resource carries ``labels``; the
caller removes them with ``remove_labelled``.

Engines that do not answer are skipped by the tests with the reason, and
fail the run in CI (``CI=true`` or ``BOTTLE_REQUIRE_ENGINES=1``).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from bottle.adapters.tls import issue_leaf, mint_ca

HERE = Path(__file__).resolve().parent
STUB_SCRIPT = HERE / "egress_stub.py"
CLIENT_SCRIPT = HERE / "egress_client.py"
BASE_IMAGE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")
ENGINES = ("docker", "podman", "podman_rootless")

UPSTREAM_HOST = "api.example.test"
ROUTE_PREFIX = "/brokered"
# The route's upstream; the egress proxy injects the brokered token on it.
ROUTE_UPSTREAM = f"https://{UPSTREAM_HOST}{ROUTE_PREFIX}"
IDENTITY = "itest-chain"
AGENT = "chain-test"
SETUP = "/opt/bottle-test"
SECRETS_FILE = "/run/bottle-secrets.json"  # core.plan.SIDECAR_SECRETS_FILE
# The egress network's address is private: the policy names the private ranges explicitly,
# as a manifest's egress.allow_private would.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


class _Route(msgspec.Struct, frozen=True):
    upstream: str
    auth_scheme: str
    token_ref: str


def engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BOTTLE_REQUIRE_ENGINES") == "1"


def _rootless_url() -> str:
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    try:
        return f"unix:///run/user/{pwd.getpwnam(user).pw_uid}/podman/podman.sock"
    except KeyError:
        return f"unix:///run/user/<no user {user}>/podman/podman.sock"


def make_runtime(name: str) -> Any:
    """Our adapter for ``docker``, ``podman`` (rootful API socket) or ``podman_rootless``."""
    if name == "docker":
        from bottle.adapters.docker import DockerRuntime

        return DockerRuntime()
    from bottle.adapters.podman import PodmanRuntime

    url = os.environ.get("BOTTLE_PODMAN_URL", "unix:///run/podman/podman.sock") if name == "podman" else _rootless_url()
    return PodmanRuntime(base_url=url)


def check_engine(name: str, runtime: Any) -> Any:
    """The engine's info, or ``RuntimeFailure`` saying why it cannot run the chain."""
    from bottle.ports.errors import RuntimeFailure

    info = runtime.info()
    if name == "podman_rootless" and not info.rootless:
        raise RuntimeFailure(f"the engine at {info.address} is not rootless")
    if not runtime.image_exists(BASE_IMAGE):
        raise RuntimeFailure(f"base image {BASE_IMAGE} is missing: run `bottle --runtime {runtime.name} images bootstrap`")
    return info


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def build_images(runtime: Any, work: Path, run_id: str, labels: Mapping[str, str],
                 on_progress: Callable[[Any], None] | None = None) -> dict[str, str]:
    """Guard, egress-proxy and client (the git gate's image: git + python3) images, tagged for this run."""
    import platformdirs

    from bottle.sidecars._wheels import sidecar_build_contexts

    context = work / "context"
    builds = sidecar_build_contexts(str(context), cache_dir=platformdirs.user_cache_dir("bottle"),
                                    roles=["guard", "egress-proxy", "git-gate"])
    images = {}
    for build in builds:
        role = "client" if build.role == "git-gate" else build.role
        tag = f"localhost/bottle-test-chain-{role}:{run_id}"
        request = build.request(tag, BASE_IMAGE, labels)
        retry_store_races(lambda r=request: runtime.build_image(r, on_progress), f"building {tag}")
        images[role] = tag
    return images


def retry_store_races(action: Callable[[], Any], what: str, attempts: int = 3) -> Any:
    """Run ``action``, again when Podman's store changed under it (another user removed a layer or image).

    Other test runs share the engines; Podman 4.3 reports an image or layer
    that vanished mid-operation as "not known" / not found. Any other error
    is raised at once.
    """
    from bottle.ports.errors import BottleError

    for attempt in range(attempts):
        try:
            return action()
        except BottleError as exc:
            text = f"{exc} {getattr(exc, 'engine_message', '')}"
            if attempt == attempts - 1 or not ("not known" in text or "not found" in text.lower()):
                raise
            time.sleep(2)
    raise AssertionError(f"unreachable: {what}")


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ChainWorld:
    """A bottle's egress chain and a stub upstream on one engine; see the module docstring."""

    def __init__(self, runtime: Any, images: Mapping[str, str], labels: Mapping[str, str], *,
                 rootless: bool, token: str, direct_client: bool = False, tag: str | None = None) -> None:
        from bottle.core.egress_policy import encode_policy, policy_document
        from bottle.core.routing import build_route_table
        from bottle.ports.runtime import ContainerSpec, FileEntry, NetworkAttachment, NetworkSpec

        self.rt = runtime
        self.token = token
        self.labels = dict(labels)
        tag = tag or secrets.token_hex(3)
        roles = ("internal", "egress", "stub", "guard", "egress-proxy", "client", "direct")
        self.names = {role: f"bchain-{role}-{tag}" for role in roles}
        # Sidecars run as the launcher's user on rootful engines (the test runs as root: 1000 stands in),
        # and as the image's user (root inside, the invoking user outside) on rootless Podman.
        self.sidecar_user = None if rootless else "1000:1000"
        uid = 0 if rootless else 1000
        now = datetime.now(timezone.utc)

        runtime.create_network(NetworkSpec(self.names["internal"], internal=True, labels=self.labels))
        runtime.create_network(NetworkSpec(self.names["egress"], internal=False, labels=self.labels))
        internal, egress = self.names["internal"], self.names["egress"]

        upstream_ca = mint_ca("egress chain test upstream CA", now=now)
        leaf = issue_leaf(upstream_ca, [UPSTREAM_HOST], now=now)
        self.guard_ca = mint_ca("bottle guard CA (test)", now=now)
        self.proxy_ca = mint_ca("bottle egress-proxy CA (test)", now=now)
        self.upstream_ca_pem = upstream_ca.cert_pem

        def files(entries: Mapping[str, bytes], mode: int = 0o644, owner: int = 0) -> list[FileEntry]:
            return [FileEntry(path, content, mode, owner, owner) for path, content in entries.items()]

        def dirs(*paths: str, mode: int = 0o755, owner: int = 0) -> list[FileEntry]:
            return [FileEntry(p, is_dir=True, mode=mode, uid=owner, gid=owner) for p in paths]

        def start(spec: ContainerSpec, entries: Sequence[FileEntry]) -> None:
            runtime.create_container(spec)
            runtime.copy_in(spec.name, "/", list(entries))
            runtime.start_container(spec.name)

        sidecar = {"cap_drop": ("ALL",), "no_new_privileges": True, "user": self.sidecar_user}
        setup = SETUP.lstrip("/")

        # The upstream, answering as api.example.test on the egress network.
        start(ContainerSpec(
            name=self.names["stub"], image=BASE_IMAGE, labels=self.labels,
            entrypoint=("python3",), command=(f"{SETUP}/stub.py",),
            env={"STUB_CERT": f"{SETUP}/cert.pem", "STUB_KEY": f"{SETUP}/key.pem", "STUB_LOG": f"{SETUP}/requests.jsonl"},
            networks=(NetworkAttachment(egress, (UPSTREAM_HOST,)),),
        ), dirs(setup) + files({f"{setup}/stub.py": STUB_SCRIPT.read_bytes(), f"{setup}/cert.pem": leaf.cert_pem,
                                f"{setup}/key.pem": leaf.key_pem}))
        wait_for(lambda: b"stub listening" in runtime.logs(self.names["stub"]), "the stub upstream")

        # The policy both sidecars read: the stub's host (and the route's, which is the same), private ranges.
        table = build_route_table([_Route(ROUTE_UPSTREAM, "bearer", "env:CHAIN_TEST_TOKEN")])
        self.token_slot = table.routes[0].token_slot
        policy = encode_policy(policy_document([UPSTREAM_HOST], table, allow_private=PRIVATE_RANGES,
                                               identity=IDENTITY, agent=AGENT))
        secrets_json = json.dumps({self.token_slot: token}).encode()

        def sidecar_files(role: str, ca: Any) -> list[FileEntry]:
            return (dirs("etc/bottle", "etc/bottle/ca", "etc/bottle/policy")
                    + dirs("var/log/bottle", mode=0o750, owner=uid)
                    + files({f"etc/bottle/ca/{role}.crt": ca.cert_pem, "etc/bottle/policy/egress.json": policy})
                    + files({f"etc/bottle/ca/{role}.key": ca.key_pem, SECRETS_FILE.lstrip("/"): secrets_json}, 0o600, uid))

        # The guard: the bottle's only way out for HTTP(S).
        start(ContainerSpec(
            name=self.names["guard"], image=images["guard"], labels=self.labels, **sidecar,
            env={"BOTTLE_IDENTITY": IDENTITY, "BOTTLE_ROLE": "guard", "BOTTLE_SECRETS_FILE": SECRETS_FILE,
                 "BOTTLE_EXTRA_CA_FILE": "/etc/bottle/extra-ca.pem"},
            networks=(NetworkAttachment(internal, ("guard",)), NetworkAttachment(egress)),
        ), sidecar_files("guard", self.guard_ca) + files({"etc/bottle/extra-ca.pem": upstream_ca.cert_pem}))

        # The egress proxy: routes and credentials; everything goes on through the guard.
        start(ContainerSpec(
            name=self.names["egress-proxy"], image=images["egress-proxy"], labels=self.labels, **sidecar,
            env={"BOTTLE_IDENTITY": IDENTITY, "BOTTLE_ROLE": "egress-proxy", "BOTTLE_SECRETS_FILE": SECRETS_FILE,
                 "HTTPS_PROXY": "http://guard:8080", "HTTP_PROXY": "http://guard:8080",
                 "BOTTLE_UPSTREAM_CA": "/etc/bottle/upstream-ca.crt"},
            networks=(NetworkAttachment(internal, ("egress-proxy",)), NetworkAttachment(egress)),
        ), sidecar_files("egress-proxy", self.proxy_ca) + files({"etc/bottle/upstream-ca.crt": self.guard_ca.cert_pem}))

        # The client, as the agent is wired: internal network only, the egress proxy as its proxy.
        proxy_url = "http://egress-proxy:8080"
        client_env = {"HOME": "/tmp", "GIT_TERMINAL_PROMPT": "0", "SSL_CERT_FILE": "/etc/bottle/ca.crt",
                      "GIT_SSL_CAINFO": "/etc/bottle/ca.crt", "REQUESTS_CA_BUNDLE": "/etc/bottle/ca.crt",
                      "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            client_env[var] = proxy_url
        client_files = dirs("etc/bottle", setup) + files({"etc/bottle/ca.crt": self.proxy_ca.cert_pem,
                                                         f"{setup}/guard-ca.crt": self.guard_ca.cert_pem,
                                                         f"{setup}/client.py": CLIENT_SCRIPT.read_bytes()})
        start(ContainerSpec(
            name=self.names["client"], image=images["client"], labels=self.labels,
            entrypoint=("sleep",), command=("infinity",), user="1000:1000", workdir="/tmp",
            cap_drop=("ALL",), no_new_privileges=True, env=client_env,
            networks=(NetworkAttachment(internal),),
        ), client_files)
        probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
        for peer in ("egress-proxy", "guard"):
            wait_for(lambda p=peer: self.exec("client", ["python3", "-c", probe, p, "8080"])[0] == 0,
                     f"the client to reach {peer}:8080", 90)

        if direct_client:
            start(ContainerSpec(
                name=self.names["direct"], image=images["client"], labels=self.labels,
                entrypoint=("sleep",), command=("infinity",), user="1000:1000", workdir="/tmp",
                env={"SSL_CERT_FILE": "/etc/bottle/ca.crt"}, networks=(NetworkAttachment(egress),),
            ), dirs("etc/bottle", setup) + files({"etc/bottle/ca.crt": upstream_ca.cert_pem,
                                                  f"{setup}/client.py": CLIENT_SCRIPT.read_bytes()}))
            wait_for(lambda: self.exec("direct", ["python3", "-c", probe, UPSTREAM_HOST, "443"])[0] == 0,
                     "the direct client to reach the stub", 60)

    # -- doing things ---------------------------------------------------------------
    def exec(self, role: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        r = self.rt.exec(self.names[role], list(argv), env=env)
        return r.exit_code, r.stdout + r.stderr

    def exec_ok(self, role: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> bytes:
        rc, out = self.exec(role, argv, env)
        assert rc == 0, out.decode("utf-8", "replace")
        return out

    GUARD_ONLY = {"EGRESS_CLIENT_PROXY": "http://guard:8080", "EGRESS_CLIENT_CA": f"{SETUP}/guard-ca.crt"}

    def client_json(self, args: Sequence[str], role: str = "client", env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Run egress_client.py in ``role``'s container; ``env=ChainWorld.GUARD_ONLY`` skips the egress proxy."""
        out = self.exec_ok(role, ["python3", f"{SETUP}/client.py", *args], env)
        return json.loads(out.decode().strip().splitlines()[-1])

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                data: str | None = None) -> dict[str, Any]:
        """One request from the client through its proxy: {"status", "headers", "body"}."""
        args = ["request", method, url]
        for k, v in (headers or {}).items():
            args += ["--header", f"{k}: {v}"]
        if data is not None:
            args += ["--data", data]
        return self.client_json(args)

    def client_shell(self, script: str) -> tuple[int, str]:
        rc, out = self.exec("client", ["sh", "-c", f"cd /tmp && {script}"])
        return rc, out.decode("utf-8", "replace")

    # -- back doors -----------------------------------------------------------------
    def stub_requests(self) -> list[dict[str, Any]]:
        rc, out = self.exec("stub", ["sh", "-c", f"cat {SETUP}/requests.jsonl 2>/dev/null || true"])
        return _json_lines(out.decode())

    def audit(self, role: str) -> list[dict[str, Any]]:
        return _json_lines(self.audit_text(role))

    def audit_text(self, role: str) -> str:
        return self.exec_ok(role, ["cat", f"/var/log/bottle/{role}.jsonl"]).decode()

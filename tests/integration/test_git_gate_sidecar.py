"""The git gate against a real git host: clone, fetch and push through it; secrets and rewrites stay out.

One suite of behaviours (``GateBehaviour``) runs against two worlds:

- ``TestGateProcesses``: the gate's entrypoint and the test git host
  (``git_gate_upstream.py``: ``git http-backend`` over TLS with basic auth)
  as processes on this machine, the agent as git with a ``~/.gitconfig``
  from ``gitconfig_rewrites``. Fast; also covers the rarer rules.
- ``TestGateContainers``: on Docker, rootful Podman and rootless Podman,
  through our ``ContainerRuntime`` adapters. The gate image is built from
  ``sidecars/Dockerfile``; the git host runs as a container on the
  bottle's egress network answering as ``git.example.test`` with a test CA
  only the gate (and the guard) trust; the agent sits on the internal
  network only, with the guard as its HTTPS proxy — so a push straight to
  the host, bypassing the gate, meets the egress chain.

Back doors: the git host's own repository (``git rev-parse`` there) and its
request log (user name presented, whether the password was right; never
the password).

Engines that do not answer are skipped here with the reason, and fail the
run in CI (``CI=true`` or ``BOTTLE_REQUIRE_ENGINES=1``).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest

from bottle.adapters.tls import issue_leaf, mint_ca
from bottle.core.gitgate import FindingWaiver, GateRemote, encode_gate_config, gitconfig_rewrites

HERE = Path(__file__).resolve().parent
UPSTREAM_SCRIPT = HERE / "git_gate_upstream.py"
BASE_IMAGE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")
RUN_ID = secrets.token_hex(4)
RUN_LABELS = {"io.bottle.test-run": RUN_ID, "io.bottle.test-case": "git-gate"}
TOKEN = "gt-" + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
USER = "x-access-token"
AWS_KEY = "AKIAZ7QX2PLM4HNBV5CD"
NOW = datetime.now(timezone.utc)


class World(Protocol):
    """A gate wired to a git host, and an agent that can reach only the gate (and, in containers, the guard)."""

    upstream: str  # the brokered remote's upstream URL, as the agent writes it

    def agent(self, script: str) -> tuple[int, str]:
        """Run a shell script as the agent in its home; (exit code, stdout+stderr)."""

    def upstream_rev(self, repo: str, ref: str) -> str:
        """What the git host's repository ``org/<repo>.git`` holds at ``ref`` ('' if nothing)."""

    def upstream_commit(self, repo: str, path: str, text: str) -> str:
        """Commit a file on the host's main directly (someone else pushing); the new sha."""

    def upstream_requests(self) -> list[dict[str, Any]]:
        """The git host's request log."""

    def audit(self) -> list[dict[str, Any]]:
        """The gate's audit lines."""

    def agent_secrets_surface(self) -> bytes:
        """Everything the agent could read that might hold a credential (env, files it owns)."""


def upstream_url(host: str, repo: str) -> str:
    return f"https://{host}/org/{repo}.git"


def remotes_for(host: str) -> list[GateRemote]:
    return [
        GateRemote("origin", upstream_url(host, "repo"), "BOTTLE_GIT_TOKEN_0", username=USER),
        GateRemote("bots", upstream_url(host, "bots"), "BOTTLE_GIT_TOKEN_0", allow=("bot/*",), username=USER),
        GateRemote(
            "fixtures", upstream_url(host, "fixtures"), "BOTTLE_GIT_TOKEN_0", username=USER,
            waivers=(FindingWaiver("tests/fixtures/*", "aws-access-key-id"),),
        ),
    ]


REPOS = ("repo", "bots", "fixtures")

AGENT_GITCONFIG = "[user]\n\tname = agent\n\temail = agent@bottle.invalid\n[init]\n\tdefaultBranch = main\n"

SEED_SCRIPT = """set -e
root="$1"; shift
for repo in "$@"; do
  git init -q --bare -b main "$root/org/$repo.git"
  tmp=$(mktemp -d)
  git -C "$tmp" init -q -b main
  echo "hello from $repo" > "$tmp/README"
  git -C "$tmp" add README
  git -C "$tmp" -c user.name=host -c user.email=host@e commit -qm seed
  git -C "$tmp" push -q "$root/org/$repo.git" main
  rm -rf "$tmp"
done
"""

COMMIT_SCRIPT = """set -e
root="$1"; repo="$2"; path="$3"; text="$4"
tmp=$(mktemp -d)
git clone -q "$root/org/$repo.git" "$tmp/w"
printf '%s\\n' "$text" > "$tmp/w/$path"
git -C "$tmp/w" add -A
git -C "$tmp/w" -c user.name=host -c user.email=host@e commit -qm "from elsewhere"
git -C "$tmp/w" push -q origin main
git -C "$tmp/w" rev-parse HEAD
rm -rf "$tmp"
"""


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the behaviours ------------------------------------------------------------------


def _clone(world: World, name: str, remote: str = "repo") -> None:
    rc, out = world.agent(f"rm -rf {name} && git clone -q {world.upstream.replace('/repo.git', f'/{remote}.git')} {name}")
    assert rc == 0, out


class GateBehaviour:
    """What a person sees through the gate. Subclasses provide a class-scoped ``world``."""

    def test_clone_and_fetch_go_through_the_gate_and_see_the_upstream(self, world: World) -> None:
        _clone(world, "c1")
        rc, out = world.agent("cat c1/README && git -C c1 config remote.origin.url")
        assert rc == 0 and "hello from repo" in out
        assert world.upstream in out  # the agent keeps the upstream's name; its git config reroutes it
        sha = world.upstream_commit("repo", "news.txt", "pushed by someone else")
        rc, out = world.agent("git -C c1 fetch -q origin && git -C c1 rev-parse origin/main")
        assert rc == 0, out
        assert out.strip() == sha

    def test_a_clean_push_arrives_upstream(self, world: World) -> None:
        _clone(world, "p1")
        rc, out = world.agent(
            "cd p1 && echo 'plain text' > notes.txt && git add notes.txt && git commit -qm notes && git push origin main"
        )
        assert rc == 0, out
        assert "accepted the push" in out
        assert world.upstream_rev("repo", "main") == world.agent("git -C p1 rev-parse HEAD")[1].strip()

    def test_a_push_adding_a_secret_is_refused_by_file_line_and_rule(self, world: World) -> None:
        _clone(world, "s1")
        before = world.upstream_rev("repo", "main")
        rc, out = world.agent(
            "cd s1 && mkdir -p app && printf 'region = \"eu\"\\nkey = \"%s\"\\n' "
            f"$(printf '%s' {shlex.quote(AWS_KEY[:4])})$(printf '%s' {shlex.quote(AWS_KEY[4:])}) > app/conf.py"
            " && git add -A && git commit -qm config && git push origin main"
        )
        assert rc != 0
        assert "app/conf.py:2: aws-access-key-id" in out
        assert "REFUSED" in out and "nothing was sent upstream" in out
        assert AWS_KEY not in out
        assert world.upstream_rev("repo", "main") == before

    def test_a_force_push_to_a_protected_branch_is_refused(self, world: World) -> None:
        _clone(world, "f1")
        before = world.upstream_rev("repo", "main")
        rc, out = world.agent("cd f1 && git commit -q --amend -m rewritten && git push --force origin main")
        assert rc != 0
        assert "protected-non-fast-forward" in out
        assert world.upstream_rev("repo", "main") == before
        rc, out = world.agent("cd f1 && git push origin :main")
        assert rc != 0 and "protected-delete" in out
        assert world.upstream_rev("repo", "main") == before

    def test_the_upstream_saw_the_real_credential_and_the_agent_never_held_it(self, world: World) -> None:
        _clone(world, "k1")
        rc, out = world.agent("cd k1 && git checkout -qb topic && git commit -q --allow-empty -m t && git push -q origin topic")
        assert rc == 0, out
        pushes = [r for r in world.upstream_requests() if r["service"] == "git-receive-pack" and r["method"] == "POST"]
        assert pushes and all(r["auth_ok"] and r["user"] == USER for r in pushes)
        assert not [r for r in world.upstream_requests() if r["user"] and not r["auth_ok"]]
        surface = world.agent_secrets_surface()
        assert surface and TOKEN.encode() not in surface

    def test_every_push_is_audited_without_secrets(self, world: World) -> None:
        _clone(world, "a1")
        rc, out = world.agent(
            "cd a1 && git checkout -qb audited && git commit -q --allow-empty -m ok && git push -q origin audited"
            f" && echo \"k = $(echo {AWS_KEY[:4]}){AWS_KEY[4:]}\" > k.py && git add k.py && git commit -qm k"
            " && git push -q origin audited"
        )
        assert rc != 0 and "k.py:1: aws-access-key-id" in out
        lines = world.audit()
        pushes = [line for line in lines if line["event"] == "push"]
        assert {line["verdict"] for line in pushes} >= {"allow", "deny"}
        assert any(line["rule"] == "secret-found" and any("aws-access-key-id" in f for f in line.get("findings", []))
                   for line in pushes)
        assert all(line["role"] == "git-gate" and line["route"] for line in lines)
        text = json.dumps(lines)
        assert TOKEN not in text and AWS_KEY not in text


# -- processes on this machine -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HostWorld:
    def __init__(self, tmp: Path, *, token: str = TOKEN) -> None:
        self.tmp = tmp
        ca = mint_ca("git-gate test CA", now=NOW)
        leaf = issue_leaf(ca, ["localhost"], now=NOW)
        (tmp / "ca.pem").write_bytes(ca.cert_pem)
        (tmp / "cert.pem").write_bytes(leaf.cert_pem)
        (tmp / "key.pem").write_bytes(leaf.key_pem)
        self.root = tmp / "upstream"
        subprocess.run(["sh", "-c", SEED_SCRIPT, "seed", str(self.root), *REPOS], check=True, capture_output=True)
        port = _free_port()
        self.host = f"localhost:{port}"
        self.upstream = upstream_url(self.host, "repo")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.upstream_env = {
            "PATH": os.environ["PATH"], "UPSTREAM_ROOT": str(self.root), "UPSTREAM_PORT": str(port),
            "UPSTREAM_CERT": str(tmp / "cert.pem"), "UPSTREAM_KEY": str(tmp / "key.pem"),
            "UPSTREAM_USER": USER, "UPSTREAM_PASSWORD": TOKEN, "UPSTREAM_LOG": str(tmp / "upstream.jsonl"),
        }
        self._start([sys.executable, str(UPSTREAM_SCRIPT)], self.upstream_env, b"upstream listening")
        self.gate_port = _free_port()
        self.remotes = remotes_for(self.host)
        self.gate_env = {
            "PATH": os.environ["PATH"],
            "BOTTLE_GIT_REMOTES": encode_gate_config(self.remotes),
            "BOTTLE_GIT_TOKEN_0": token,
            "BOTTLE_EXTRA_CA_FILE": str(tmp / "ca.pem"),
            "BOTTLE_GIT_ROOT": str(tmp / "gate"),
            "BOTTLE_AUDIT_LOG": str(tmp / "audit" / "git-gate.jsonl"),
            "BOTTLE_RUNTIME_DIR": str(tmp / "gate-run"),
            "BOTTLE_LISTEN_PORT": str(self.gate_port),
            "BOTTLE_IDENTITY": "itest-abcde",
        }
        self.gate = self._start([sys.executable, "-m", "bottle.sidecars.git_gate.entrypoint"], self.gate_env, b"listening on")
        self.home = tmp / "agent"
        self.home.mkdir()
        (self.home / ".gitconfig").write_text(AGENT_GITCONFIG + gitconfig_rewrites(self.remotes, host="127.0.0.1", port=self.gate_port))
        self.agent_env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "GIT_TERMINAL_PROMPT": "0",
                          "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}

    def _start(self, argv: list[str], env: dict[str, str], ready: bytes) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=open(self.tmp / f"{len(self.procs)}.err", "wb"))
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert ready in line, (self.tmp / f"{len(self.procs) - 1}.err").read_text()
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def agent(self, script: str) -> tuple[int, str]:
        r = subprocess.run(["sh", "-c", script], cwd=self.home, env=self.agent_env, capture_output=True, timeout=120)
        return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")

    def upstream_rev(self, repo: str, ref: str) -> str:
        r = subprocess.run(["git", "--git-dir", str(self.root / "org" / f"{repo}.git"), "rev-parse", "--verify", "-q", ref],
                           capture_output=True, text=True)
        return r.stdout.strip()

    def upstream_commit(self, repo: str, path: str, text: str) -> str:
        r = subprocess.run(["sh", "-c", COMMIT_SCRIPT, "commit", str(self.root), repo, path, text],
                           capture_output=True, text=True, check=True)
        return r.stdout.strip().splitlines()[-1]

    def upstream_requests(self) -> list[dict[str, Any]]:
        return _json_lines((self.tmp / "upstream.jsonl").read_text())

    def audit(self) -> list[dict[str, Any]]:
        return _json_lines((self.tmp / "audit" / "git-gate.jsonl").read_text())

    def agent_secrets_surface(self) -> bytes:
        parts = [json.dumps(self.agent_env).encode()]
        for path in self.home.rglob("*"):
            if path.is_file():
                parts.append(path.read_bytes())
        return b"\n".join(parts)

    def gate_stderr(self) -> str:
        return (self.tmp / "1.err").read_text()


@pytest.fixture(scope="class")
def host_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostWorld]:
    w = HostWorld(tmp_path_factory.mktemp("gitgate"))
    try:
        yield w
    finally:
        w.close()


class TestGateProcesses(GateBehaviour):
    @pytest.fixture(scope="class")
    @classmethod
    def world(cls, host_world: HostWorld) -> HostWorld:
        return host_world

    def test_unprotected_branches_may_be_rewound_and_deleted(self, world: HostWorld) -> None:
        _clone(world, "u1")
        rc, out = world.agent("cd u1 && git checkout -qb wip && echo 1 > a && git add a && git commit -qm one && git push -q origin wip")
        assert rc == 0, out
        rc, out = world.agent("cd u1 && git commit -q --amend -m again && git push -q --force origin wip")
        assert rc == 0, out
        assert world.upstream_rev("repo", "wip") == world.agent("git -C u1 rev-parse HEAD")[1].strip()
        rc, out = world.agent("cd u1 && git push -q origin :wip")
        assert rc == 0, out
        assert world.upstream_rev("repo", "wip") == ""

    def test_tags_may_be_created_but_not_moved(self, world: HostWorld) -> None:
        _clone(world, "t1")
        rc, out = world.agent("cd t1 && git tag -a v1 -m 'release one' && git push -q origin v1")
        assert rc == 0, out
        assert world.upstream_rev("repo", "refs/tags/v1")
        rc, out = world.agent("cd t1 && git commit -q --allow-empty -m more && git tag -f -a v1 -m moved && git push --force origin v1")
        assert rc != 0 and "tag-move" in out

    def test_the_allow_list_of_a_remote_limits_the_refs(self, world: HostWorld) -> None:
        _clone(world, "b1", "bots")
        rc, out = world.agent("cd b1 && git commit -q --allow-empty -m x && git push origin HEAD:refs/heads/bot/x")
        assert rc == 0, out
        rc, out = world.agent("cd b1 && git push origin HEAD:refs/heads/feature")
        assert rc != 0 and "not-allowed" in out
        assert world.upstream_rev("bots", "feature") == ""

    def test_secrets_in_commit_messages_and_the_gates_own_credential_are_refused(self, world: HostWorld) -> None:
        _clone(world, "m1")
        rc, out = world.agent(
            f"cd m1 && git checkout -qb m && git commit -q --allow-empty -m 'subject' -m \"key $(echo {AWS_KEY[:4]}){AWS_KEY[4:]}\""
            " && git push origin m"
        )
        assert rc != 0 and "commit message of" in out and "line 3: aws-access-key-id" in out
        # The agent cannot know the gate's token; a push holding it (planted here by the test) is refused.
        token_b64 = subprocess.run(["base64", "-w0"], input=TOKEN.encode(), capture_output=True, check=True).stdout.decode()
        rc, out = world.agent(
            f"cd m1 && git reset -q --hard origin/main && git checkout -qB n && echo {token_b64} | base64 -d > t.txt"
            " && git add t.txt && git commit -qm t && git push origin n"
        )
        assert rc != 0 and "t.txt:1: brokered-secret BOTTLE_GIT_TOKEN_0" in out
        assert TOKEN not in out and token_b64 not in out
        assert world.upstream_rev("repo", "m") == "" and world.upstream_rev("repo", "n") == ""

    def test_a_manifest_waiver_lets_a_known_fixture_through(self, world: HostWorld) -> None:
        _clone(world, "w1", "fixtures")
        rc, out = world.agent(
            "cd w1 && mkdir -p tests/fixtures && printf 'k = \"%s\"\\n' "
            f"$(echo {AWS_KEY[:4]}){AWS_KEY[4:]} > tests/fixtures/creds.py && git add -A && git commit -qm fx"
            " && git push origin main"
        )
        assert rc == 0, out
        assert "waived by the manifest: tests/fixtures/creds.py:1: aws-access-key-id" in out
        rc, out = world.agent(
            f"cd w1 && printf 'k = \"%s\"\\n' $(echo {AWS_KEY[:4]}){AWS_KEY[4:]} > creds.py && git add -A && git commit -qm x"
            " && git push origin main"
        )
        assert rc != 0 and "creds.py:1: aws-access-key-id" in out

    def test_the_upstreams_own_refusal_reaches_the_agent(self, world: HostWorld) -> None:
        hook = world.root / "org" / "repo.git" / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'upstream policy: pushes to frozen/* are closed' >&2\n"
                        "grep -q refs/heads/frozen/ && exit 1\nexit 0\n")
        hook.chmod(0o755)
        try:
            _clone(world, "r1")
            rc, out = world.agent("cd r1 && git commit -q --allow-empty -m f && git push origin HEAD:refs/heads/frozen/x")
        finally:
            hook.unlink()
        assert rc != 0
        assert "REFUSED the push" in out and "upstream policy: pushes to frozen/* are closed" in out
        assert world.upstream_rev("repo", "frozen/x") == ""
        # The gate's copy did not move either: the next fetch shows no such branch.
        rc, out = world.agent("cd r1 && git ls-remote origin")
        assert rc == 0 and "frozen/x" not in out

    def test_a_ref_to_a_bare_blob_or_tree_cannot_smuggle_content(self, world: HostWorld) -> None:
        _clone(world, "o1")
        for kind, make in (("blob", "git hash-object -w k.txt"), ("tree", "git add k.txt && git write-tree")):
            rc, out = world.agent(
                f"cd o1 && echo \"k = $(echo {AWS_KEY[:4]}){AWS_KEY[4:]}\" > k.txt && sha=$({make})"
                f" && git push origin $sha:refs/tags/{kind}"
            )
            assert rc != 0, out
            assert f"refs/tags/{kind}: not-a-commit" in out
            assert world.upstream_rev("repo", f"refs/tags/{kind}") == ""
            assert AWS_KEY not in out

    def test_a_push_of_thousands_of_commits_is_scanned_whole(self, world: HostWorld) -> None:
        _clone(world, "l1")
        # 3000 commits through fast-import; the secret sits in the very first one.
        stream = []
        for i in range(3000):
            body = f"k = '{AWS_KEY}'\n" if i == 0 else f"line {i}\n"
            stream.append(f"commit refs/heads/long\ncommitter a <a@b> {1700000000 + i} +0000\ndata 2\nc\n"
                          + ("from refs/heads/main\n" if i == 0 else "")
                          + f"M 100644 inline f{i % 50}.txt\ndata {len(body)}\n{body}\n")
        (world.home / "l1" / "stream.fi").write_text("".join(stream))
        rc, out = world.agent("cd l1 && git fast-import --quiet < stream.fi && rm stream.fi && git push origin long")
        assert rc != 0 and "f0.txt:1: aws-access-key-id" in out, out[-2000:]
        assert world.upstream_rev("repo", "long") == ""

    def test_the_credential_stays_out_of_the_gates_files_and_output(self, world: HostWorld) -> None:
        for path in (world.tmp / "gate").rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
        assert TOKEN not in world.gate_stderr()

    def test_http_backend_and_the_hook_never_hold_the_credential(self, world: HostWorld) -> None:
        # Wrap the gate's hook: record its own environment and its parents' (receive-pack,
        # http-backend) during a real push, then let the real hook run.
        hook = world.tmp / "gate-run" / "hooks" / "pre-receive"
        real = hook.with_name("pre-receive.real")
        dump = world.tmp / "hook-env.txt"
        hook.rename(real)
        hook.write_text(
            "#!/bin/sh\n"
            f"{{ env; tr '\\0' '\\n' < /proc/$PPID/environ; pp=$(cut -d' ' -f4 /proc/$PPID/stat);"
            f" tr '\\0' '\\n' < /proc/$pp/environ; }} > {shlex.quote(str(dump))}\n"
            f"exec {shlex.quote(str(real))}\n"
        )
        hook.chmod(0o755)
        try:
            _clone(world, "e1")
            rc, out = world.agent("cd e1 && git checkout -qb envcheck && git commit -q --allow-empty -m e && git push origin envcheck")
        finally:
            real.replace(hook)
        assert rc == 0 and "accepted the push" in out, out
        seen = dump.read_text()
        assert "GIT_QUARANTINE_PATH=" in seen and "GIT_PROJECT_ROOT=" in seen
        assert TOKEN not in seen and "BOTTLE_" not in seen

    def test_paths_other_than_smart_http_are_refused(self, world: HostWorld) -> None:
        import urllib.error
        import urllib.request

        base = f"http://127.0.0.1:{world.gate_port}"
        assert urllib.request.urlopen(f"{base}/healthz").read() == b"ok\n"
        for path, status in (("/origin.git/info/refs", 403), ("/origin.git/HEAD", 404), ("/nope.git/info/refs?service=git-upload-pack", 404),
                             ("/origin.git/objects/info/packs", 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path)
            assert err.value.code == status, path


def test_an_unreachable_upstream_or_a_wrong_credential_is_a_clear_error(tmp_path: Path) -> None:
    world = HostWorld(tmp_path, token="gt-not-the-right-token-0123456789")
    try:
        rc, out = world.agent(f"git clone -q {world.upstream} x")
        assert rc != 0
        assert "bottle git gate: cannot reach" in out
        assert "gt-not-the-right-token" not in out
        denied = [a for a in world.audit() if a["event"] == "fetch"]
        assert denied and denied[-1]["verdict"] == "deny" and denied[-1]["rule"] == "upstream-unreachable"
        world.procs[0].terminate()
        world.procs[0].wait()
        rc, out = world.agent(f"git clone -q {world.upstream} y")
        assert rc != 0 and "bottle git gate: cannot reach" in out
    finally:
        world.close()


# -- real engines ----------------------------------------------------------------------


def _engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BOTTLE_REQUIRE_ENGINES") == "1"


def _rootless_url() -> str:
    user = os.environ.get("BOTTLE_ROOTLESS_USER", "bottle-rootless")
    try:
        return f"unix:///run/user/{pwd.getpwnam(user).pw_uid}/podman/podman.sock"
    except KeyError:
        return f"unix:///run/user/<no user {user}>/podman/podman.sock"


def _make_runtime(name: str) -> Any:
    if name == "docker":
        from bottle.adapters.docker import DockerRuntime

        return DockerRuntime()
    from bottle.adapters.podman import PodmanRuntime

    url = os.environ.get("BOTTLE_PODMAN_URL", "unix:///run/podman/podman.sock") if name == "podman" else _rootless_url()
    return PodmanRuntime(base_url=url)


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


UPSTREAM_HOST = "git.example.test"
GATE_SETUP = "/tmp/bottle-test"


class ContainerWorld:
    """One bottle's worth of networks and containers on a real engine, all carrying ``RUN_LABELS``."""

    def __init__(self, runtime: Any, images: dict[str, str], gate_user: str | None) -> None:
        from bottle.core.egress_policy import encode_policy, policy_document
        from bottle.ports.runtime import ContainerSpec, FileEntry, NetworkAttachment, NetworkSpec

        self.rt = runtime
        self.gate_user = gate_user
        self.upstream = upstream_url(UPSTREAM_HOST, "repo")
        tag = f"{RUN_ID}-{secrets.token_hex(2)}"
        self.names = {role: f"bgt-{role}-{tag}" for role in ("internal", "egress", "upstream", "gate", "guard", "agent")}
        labels = dict(RUN_LABELS)
        runtime.create_network(NetworkSpec(self.names["internal"], internal=True, labels=labels))
        runtime.create_network(NetworkSpec(self.names["egress"], internal=False, labels=labels))

        ca = mint_ca("git-gate test CA", now=NOW)
        leaf = issue_leaf(ca, [UPSTREAM_HOST], now=NOW)
        guard_ca = mint_ca("guard test CA", now=NOW)

        def files(entries: dict[str, bytes], mode: int = 0o644, owner: int = 0) -> list[FileEntry]:
            return [FileEntry(path, content, mode, owner, owner) for path, content in entries.items()]

        def start(role: str, spec: ContainerSpec, entries: list[FileEntry]) -> str:
            runtime.create_container(spec)
            runtime.copy_in(spec.name, "/tmp", [FileEntry("bottle-test", is_dir=True, mode=0o755)] + entries)
            runtime.start_container(spec.name)
            return spec.name

        # The git host, answering as git.example.test on the egress network.
        start("upstream", ContainerSpec(
            name=self.names["upstream"], image=images["gate"], labels=labels,
            entrypoint=("python3",), command=(f"{GATE_SETUP}/upstream.py",),
            env={"UPSTREAM_ROOT": "/srv/upstream", "UPSTREAM_PORT": "443", "UPSTREAM_CERT": f"{GATE_SETUP}/cert.pem",
                 "UPSTREAM_KEY": f"{GATE_SETUP}/key.pem", "UPSTREAM_USER": USER, "UPSTREAM_PASSWORD": TOKEN,
                 "UPSTREAM_LOG": f"{GATE_SETUP}/upstream.jsonl"},
            networks=(NetworkAttachment(self.names["egress"], (UPSTREAM_HOST,)),),
        ), files({"bottle-test/upstream.py": UPSTREAM_SCRIPT.read_bytes(), "bottle-test/cert.pem": leaf.cert_pem,
                  "bottle-test/key.pem": leaf.key_pem, "bottle-test/seed.sh": SEED_SCRIPT.encode(),
                  "bottle-test/commit.sh": COMMIT_SCRIPT.encode()}))
        self._exec_ok("upstream", ["sh", f"{GATE_SETUP}/seed.sh", "/srv/upstream", *REPOS])
        probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
        _wait(lambda: self._exec("upstream", ["python3", "-c", probe, "127.0.0.1", "443"])[0] == 0, "the git host")

        # The gate: internal (as git-gate) and egress, confined as the launch plan confines sidecars,
        # as a non-root user where the engine runs as root; its token arrives as a file the launcher copies in.
        self.remotes = remotes_for(UPSTREAM_HOST)
        uid = int(gate_user.split(":")[0]) if gate_user else 0
        self.audit_log = f"{GATE_SETUP}/audit/git-gate.jsonl"
        start("gate", ContainerSpec(
            name=self.names["gate"], image=images["gate"], labels=labels, user=gate_user,
            cap_drop=("ALL",), no_new_privileges=True,
            env={"BOTTLE_IDENTITY": "itest-abcde", "BOTTLE_ROLE": "git-gate",
                 "BOTTLE_GIT_REMOTES": encode_gate_config(self.remotes), "BOTTLE_AUDIT_LOG": self.audit_log,
                 "BOTTLE_EXTRA_CA_FILE": f"{GATE_SETUP}/ca.pem", "BOTTLE_SECRETS_FILE": f"{GATE_SETUP}/secrets.json"},
            networks=(NetworkAttachment(self.names["internal"], ("git-gate",)), NetworkAttachment(self.names["egress"])),
        ), [FileEntry("bottle-test/audit", is_dir=True, mode=0o700, uid=uid, gid=uid)]
            + files({"bottle-test/ca.pem": ca.cert_pem})
            + files({"bottle-test/secrets.json": json.dumps({"BOTTLE_GIT_TOKEN_0": TOKEN}).encode()}, 0o600, uid))
        _wait(lambda: b"listening on" in runtime.logs(self.names["gate"]), "the gate to listen")

        # The guard: the agent's only way out for HTTP(S); it knows the git token to catch it leaving.
        policy = policy_document([UPSTREAM_HOST], allow_private=["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                                 identity="itest-abcde", agent="itest")
        start("guard", ContainerSpec(
            name=self.names["guard"], image=images["guard"], labels=labels,
            env={"BOTTLE_IDENTITY": "itest-abcde", "BOTTLE_ROLE": "guard", "BOTTLE_TOKEN_0": TOKEN,
                 "BOTTLE_POLICY_FILE": f"{GATE_SETUP}/policy/egress.json", "BOTTLE_CA_KEY": f"{GATE_SETUP}/guard.key",
                 "BOTTLE_CA_CERT": f"{GATE_SETUP}/guard.crt", "BOTTLE_EXTRA_CA_FILE": f"{GATE_SETUP}/ca.pem"},
            networks=(NetworkAttachment(self.names["internal"], ("guard",)), NetworkAttachment(self.names["egress"])),
        ), [FileEntry("bottle-test/policy", is_dir=True, mode=0o755)]
            + files({"bottle-test/policy/egress.json": encode_policy(policy), "bottle-test/guard.crt": guard_ca.cert_pem,
                     "bottle-test/ca.pem": ca.cert_pem})
            + files({"bottle-test/guard.key": guard_ca.key_pem}, 0o600))

        # The agent: internal network only; git rewrites brokered remotes to the gate, HTTPS goes to the guard.
        home = AGENT_GITCONFIG + "[safe]\n\tdirectory = *\n" + gitconfig_rewrites(self.remotes)
        start("agent", ContainerSpec(
            name=self.names["agent"], image=images["gate"], labels=labels,
            entrypoint=("sleep",), command=("infinity",), workdir="/root",
            env={"HOME": "/root", "HTTPS_PROXY": "http://guard:8080", "HTTP_PROXY": "http://guard:8080",
                 "https_proxy": "http://guard:8080", "NO_PROXY": "git-gate,localhost", "no_proxy": "git-gate,localhost",
                 "GIT_SSL_CAINFO": f"{GATE_SETUP}/guard.crt", "GIT_TERMINAL_PROMPT": "0"},
            networks=(NetworkAttachment(self.names["internal"]),),
        ), files({"bottle-test/guard.crt": guard_ca.cert_pem, "bottle-test/gitconfig": home.encode()}))
        self._exec_ok("agent", ["cp", f"{GATE_SETUP}/gitconfig", "/root/.gitconfig"])
        for peer in ("git-gate", "guard"):
            _wait(lambda p=peer: self._exec("agent", ["python3", "-c", probe, p, "8080"])[0] == 0, f"the agent to reach {peer}", 90)

    def _exec(self, role: str, argv: list[str]) -> tuple[int, bytes]:
        r = self.rt.exec(self.names[role], argv)
        return r.exit_code, r.stdout + r.stderr

    def _exec_ok(self, role: str, argv: list[str]) -> bytes:
        rc, out = self._exec(role, argv)
        assert rc == 0, out.decode("utf-8", "replace")
        return out

    # -- World ------------------------------------------------------------------
    def agent(self, script: str) -> tuple[int, str]:
        rc, out = self._exec("agent", ["sh", "-c", f"cd /root && {script}"])
        return rc, out.decode("utf-8", "replace")

    def upstream_rev(self, repo: str, ref: str) -> str:
        rc, out = self._exec("upstream", ["git", "--git-dir", f"/srv/upstream/org/{repo}.git", "rev-parse", "--verify", "-q", ref])
        return out.decode().strip() if rc == 0 else ""

    def upstream_commit(self, repo: str, path: str, text: str) -> str:
        out = self._exec_ok("upstream", ["sh", f"{GATE_SETUP}/commit.sh", "/srv/upstream", repo, path, text])
        return out.decode().strip().splitlines()[-1]

    def upstream_requests(self) -> list[dict[str, Any]]:
        return _json_lines(self._exec_ok("upstream", ["cat", f"{GATE_SETUP}/upstream.jsonl"]).decode())

    def audit(self) -> list[dict[str, Any]]:
        return _json_lines(self._exec_ok("gate", ["cat", self.audit_log]).decode())

    def guard_audit(self) -> list[dict[str, Any]]:
        return _json_lines(self._exec_ok("guard", ["cat", "/var/log/bottle/guard.jsonl"]).decode())

    def agent_secrets_surface(self) -> bytes:
        # Every process's environment and command line, and every file the agent could have been given.
        rc, out = self._exec("agent", ["sh", "-c", "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null;"
                                                   " find /root /tmp /etc /home -type f -size -2M -exec cat {} + 2>/dev/null"])
        return out


def _build_images(runtime: Any, work: Path) -> dict[str, str]:
    """The gate and guard images from the sidecar build context (wheels cached on the host)."""
    import platformdirs

    from bottle.sidecars._wheels import sidecar_build_contexts

    context = work / "context"
    builds = sidecar_build_contexts(str(context), cache_dir=platformdirs.user_cache_dir("bottle"), roles=["git-gate", "guard"])
    images = {}
    for build in builds:
        role = "gate" if build.role == "git-gate" else build.role
        tag = f"localhost/bottle-test-{role}:{RUN_ID}"
        runtime.build_image(build.request(tag, BASE_IMAGE, RUN_LABELS))
        images[role] = tag
    return images


ENGINES = ("docker", "podman", "podman_rootless")


@pytest.fixture(
    scope="class",
    params=[pytest.param(n, marks=[getattr(pytest.mark, n), pytest.mark.engine], id=n) for n in ENGINES],
)
def engine_world(request: pytest.FixtureRequest) -> Iterator[ContainerWorld]:
    from bottle.ports.errors import RuntimeFailure

    name: str = request.param
    try:
        runtime = _make_runtime(name)
        info = runtime.info()
        if name == "podman_rootless" and not info.rootless:
            raise RuntimeFailure(f"the engine at {info.address} is not rootless")
        if not runtime.image_exists(BASE_IMAGE):
            raise RuntimeFailure(f"base image {BASE_IMAGE} is missing: run `bottle --runtime {runtime.name} images bootstrap`")
    except RuntimeFailure as exc:
        message = f"{name}: {exc}"
        if _engines_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    work = Path(tempfile.mkdtemp(prefix="bottle-gitgate-"))
    try:
        images = _build_images(runtime, work)
        # Rootful engines run sidecars as the invoking user (here: someone who is not root inside).
        yield ContainerWorld(runtime, images, None if info.rootless else "1000:1000")
    finally:
        try:
            runtime.remove_labelled(RUN_LABELS)
        finally:
            runtime.close()
            shutil.rmtree(work, ignore_errors=True)


class TestGateContainers(GateBehaviour):
    @pytest.fixture(scope="class")
    @classmethod
    def world(cls, engine_world: ContainerWorld) -> ContainerWorld:
        return engine_world

    def test_a_push_straight_to_the_upstream_is_refused_by_the_egress_chain(self, world: ContainerWorld) -> None:
        _clone(world, "d1")
        seen = len(world.upstream_requests())
        # No rewrite (GIT_CONFIG_GLOBAL=/dev/null): git goes to git.example.test itself, through the guard.
        rc, out = world.agent(
            "cd d1 && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m direct"
            f" && GIT_CONFIG_GLOBAL=/dev/null git push {world.upstream} HEAD:refs/heads/direct"
        )
        assert rc != 0 and "403" in out, out
        new = world.upstream_requests()[seen:]
        assert not [r for r in new if r["service"] == "git-receive-pack"]
        assert world.upstream_rev("repo", "direct") == ""
        assert any(a.get("rule") == "git-push" and a.get("verdict") == "deny" for a in world.guard_audit())
        # Reading straight from the host does pass the guard, and fails there: the agent has no credential.
        rc, out = world.agent(f"GIT_CONFIG_GLOBAL=/dev/null git ls-remote {world.upstream}")
        assert rc != 0
        assert [r for r in world.upstream_requests()[seen:] if r["status"] == 401 and not r["auth_ok"]]

    def test_the_gate_runs_unprivileged_and_keeps_the_token_out_of_its_files(self, world: ContainerWorld) -> None:
        rc, out = world._exec("gate", ["sh", "-c", "id -u; grep CapEff /proc/self/status; cat /proc/[0-9]*/cmdline"])
        text = out.decode("utf-8", "replace")
        assert rc == 0, text
        assert text.splitlines()[0] == ("0" if world.gate_user is None else world.gate_user.split(":")[0])
        assert "CapEff:\t0000000000000000" in text
        assert TOKEN not in text
        repos = world.rt.copy_out(world.names["gate"], "/srv/git")
        assert any(e.path.endswith("origin.git/config") for e in repos)
        assert not [e.path for e in repos if TOKEN.encode() in e.content]

    def test_the_agent_cannot_reach_the_upstream_without_a_proxy(self, world: ContainerWorld) -> None:
        rc, out = world.agent(
            "python3 -c \"import socket; socket.create_connection(('git.example.test', 443), 3)\""
        )
        assert rc != 0

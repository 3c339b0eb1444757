"""The git gate through `bottle start`, on every real engine: the only way a push leaves a bottle.

A real git host (``tests/integration/git_gate_upstream.py``: ``git http-backend``
over TLS with basic auth) plays the public host ``git.example.test``. It is
not part of bottle: like the lifecycle suite's stub, a thread waits for the
bottle's egress network to appear and joins the host to it under that name
(the engine's DNS on that network answers for it). It runs from the git gate
image only because that image has git and python3. Its certificate comes
from a test CA that the manifest names in ``egress.extra_ca_file``, so the
gate (and the guard) trust it the way a user's private git host would be
trusted; its address is private, so the manifest lists the private ranges
in ``egress.allow_private`` for the guard (the gate needs no exception: it
talks to its remotes' hosts directly).

The agent runs ``bottle start AGENT -y -- <wait for a file>`` and each step
runs in the agent container as the agent (its user, env and networks),
through the engine's exec. Back doors: the host's own repositories and its
request log (user name presented, whether the password matched; never the
password), the bottle's state directory on the host (the audit logs), and a
root grep inside the agent container.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import GENERIC_IMAGE, SIDECAR_VERSION, Bottle, EgressNeighbour, Engine, jsonl, wait_for_agent

from bottle.core import naming
from bottle.core.images import sidecar_image_tag
from bottle.core.state import audit_log_path
from bottle.ports.runtime import ContainerSpec, FileEntry, NetworkAttachment, NetworkInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

import git_gate_upstream  # noqa: E402

pytestmark = pytest.mark.e2e

HOST = "git.example.test"
USER = "x-access-token"
AWS_KEY = "AKIAZ7QX2PLM4HNBV5CD"
DONE_FILE = ".git-e2e-done"
EXIT_CODE = 7
SETUP = "/tmp/git-host"
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
COMMITTER = (
    "export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=agent@bottle.invalid "
    "GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=agent@bottle.invalid; cd /tmp; "
)

SEED = """set -e
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

COMMIT = """set -e
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


def url(repo: str) -> str:
    return f"https://{HOST}/org/{repo}.git"


class GitHost(EgressNeighbour):
    """A git host answering as ``git.example.test`` on the bottle's egress network."""

    prefix = "githost"
    wait_seconds = 180.0

    def __init__(self, engine: Engine, agent: str, token: str, cert: bytes, key: bytes) -> None:
        super().__init__(engine, agent)
        self.token = token
        self.files = {"upstream.py": Path(git_gate_upstream.__file__).read_bytes(), "cert.pem": cert,
                      "key.pem": key, "seed.sh": SEED.encode(), "commit.sh": COMMIT.encode()}

    def join(self, network: NetworkInfo) -> None:
        rt = self.engine.adapter
        rt.create_container(ContainerSpec(
            name=self.name,
            image=sidecar_image_tag(naming.ROLE_GIT_GATE, SIDECAR_VERSION),
            entrypoint=("python3",),
            command=(f"{SETUP}/upstream.py",),
            env={"UPSTREAM_ROOT": "/srv/upstream", "UPSTREAM_PORT": "443", "UPSTREAM_CERT": f"{SETUP}/cert.pem",
                 "UPSTREAM_KEY": f"{SETUP}/key.pem", "UPSTREAM_USER": USER, "UPSTREAM_PASSWORD": self.token,
                 "UPSTREAM_LOG": f"{SETUP}/requests.jsonl"},
            labels=self.labels(),
            networks=(NetworkAttachment(network.name, (HOST,)),),
        ))
        rt.copy_in(self.name, "/tmp", [FileEntry("git-host", is_dir=True, mode=0o755)]
                   + [FileEntry(f"git-host/{k}", v, 0o644) for k, v in self.files.items()])
        rt.start_container(self.name)
        self.exec_ok(["sh", f"{SETUP}/seed.sh", "/srv/upstream", "repo", "fixtures"])
        probe = "import socket; socket.create_connection(('127.0.0.1', 443), 2)"
        deadline = time.monotonic() + 60
        while self.exec(["python3", "-c", probe])[0] != 0:
            if time.monotonic() > deadline:
                raise AssertionError("the git host never listened")
            time.sleep(0.1)

    def exec(self, argv: list[str]) -> tuple[int, str]:
        r = self.engine.adapter.exec(self.name, argv)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")

    def exec_ok(self, argv: list[str]) -> str:
        rc, out = self.exec(argv)
        assert rc == 0, out
        return out

    def rev(self, repo: str, ref: str) -> str:
        rc, out = self.exec(["git", "--git-dir", f"/srv/upstream/org/{repo}.git", "rev-parse", "--verify", "-q", ref])
        return out.strip() if rc == 0 else ""

    def commit(self, repo: str, path: str, text: str) -> str:
        return self.exec_ok(["sh", f"{SETUP}/commit.sh", "/srv/upstream", repo, path, text]).strip().splitlines()[-1]

    def requests(self) -> list[dict[str, Any]]:
        rc, out = self.exec(["cat", f"{SETUP}/requests.jsonl"])
        return [json.loads(line) for line in out.splitlines() if line.strip()] if rc == 0 else []






def test_pushes_leave_only_through_the_gate(bottle: Bottle, engine: Engine) -> None:
    from bottle.adapters.tls import issue_leaf, mint_ca

    now = datetime.now(timezone.utc)
    ca = mint_ca("git host test CA", now=now)
    leaf = issue_leaf(ca, [HOST], now=now)
    ca_file = bottle.home / "git-host-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    token = bottle.secret  # E2E_TOKEN on the host: the manifest's secret source
    bottle.write_manifest({bottle.agent: {
        "image": GENERIC_IMAGE,
        "command": ["bash", "-l"],
        "bottle": {
            # The host is allowed for HTTP too, so a push straight to it meets the
            # guard's git-push rule itself, not the allowlist.
            "egress": {"allow": [HOST], "allow_private": PRIVATE, "extra_ca_file": str(ca_file)},
            "git": [
                {"name": "origin", "upstream": url("repo"), "token_ref": "E2E_TOKEN", "username": USER},
                {"name": "fixtures", "upstream": url("fixtures"), "token_ref": "E2E_TOKEN", "username": USER,
                 "allow_findings": [{"path": "tests/fixtures/*", "rule": "aws-access-key-id"}]},
            ],
        },
    }})
    for path in (ca_file, bottle.manifest):
        path.chmod(0o644)
    subprocess.run(["chown", f"{engine.uid}:{engine.gid}", str(ca_file)], check=True)

    wait = f"until [ -e /workspace/{DONE_FILE} ]; do sleep 0.2; done; exit {EXIT_CODE}"
    with GitHost(engine, bottle.agent, token, leaf.cert_pem, leaf.key_pem) as host:
        proc = bottle.popen("start", bottle.agent, "-y", "--", "bash", "-c", wait)
        try:
            agent = wait_for_agent(engine, bottle.agent, proc, timeout=240)
            assert host.ready.wait(120) and host.error is None, host.error
            identity = agent.removeprefix(f"bottle-{naming.ROLE_AGENT}-")
            state = bottle.state_root / identity
            checks(engine, host, agent, identity, state, token)
        finally:
            (bottle.project / DONE_FILE).touch()
            out, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_CODE, f"{out}\n{err}"
    assert token not in out and token not in err
    # nothing left: the bottle, the host it was given and its state are gone
    assert bottle.leftovers() == {}
    assert engine.leftovers({naming.LABEL_IDENTITY: identity}) == {}
    assert bottle.states() == []


def checks(engine: Engine, host: GitHost, agent: str, identity: str, state: Path, token: str) -> None:
    def sh(script: str, user: str | None = None) -> tuple[int, str]:
        r = engine.adapter.exec(agent, ["bash", "-c", COMMITTER + script], user=user)
        return r.exit_code, (r.stdout + r.stderr).decode("utf-8", "replace")

    # -- clone and fetch through the gate
    rc, out = sh(f"git clone -q {url('repo')} c && cat c/README && git -C c config remote.origin.url")
    assert rc == 0, out
    assert "hello from repo" in out and url("repo") in out  # the agent keeps the upstream's name
    news = host.commit("repo", "news.txt", "pushed by someone else")
    rc, out = sh("git -C c fetch -q origin && git -C c rev-parse origin/main")
    assert rc == 0, out
    assert out.strip() == news

    # -- a clean push arrives upstream
    rc, out = sh("cd c && git merge -q --ff-only origin/main && echo notes > notes.txt && git add notes.txt"
                 " && git commit -qm notes && git push origin main")
    assert rc == 0, out
    assert "accepted the push" in out
    clean = host.rev("repo", "main")
    assert clean == sh("git -C c rev-parse HEAD")[1].strip()

    # -- a push adding an AWS-style key is refused by file:line:rule; the upstream does not move
    key = f"$(printf %s {shlex.quote(AWS_KEY[:4])}){AWS_KEY[4:]}"  # the script itself never holds the key
    rc, out = sh(f"cd c && mkdir -p app && printf 'region = \"eu\"\\nkey = \"%s\"\\n' {key} > app/conf.py"
                 " && git add -A && git commit -qm config && git push origin main")
    assert rc != 0, out
    assert "app/conf.py:2: aws-access-key-id" in out and "REFUSED" in out
    assert AWS_KEY not in out
    assert host.rev("repo", "main") == clean
    sh("cd c && git reset -q --hard origin/main")

    # -- a force-push to a protected branch is refused
    rc, out = sh("cd c && git commit -q --amend -m rewritten && git push --force origin main")
    assert rc != 0 and "protected-non-fast-forward" in out, out
    assert host.rev("repo", "main") == clean

    # -- the manifest's waiver, and only it, lets a known fixture through
    rc, out = sh(f"git clone -q {url('fixtures')} f && cd f && mkdir -p tests/fixtures"
                 f" && printf 'k = \"%s\"\\n' {key} > tests/fixtures/creds.py && git add -A && git commit -qm fx"
                 " && git push origin main")
    assert rc == 0, out
    assert "waived by the manifest: tests/fixtures/creds.py:1: aws-access-key-id" in out

    # -- a push straight to the host over HTTPS, bypassing the gate, is refused by the egress chain
    seen = len(host.requests())
    rc, out = sh("cd c && git commit -q --allow-empty -m direct"
                 f" && GIT_CONFIG_GLOBAL=/dev/null git push {url('repo')} HEAD:refs/heads/direct")
    assert rc != 0 and "403" in out, out
    assert host.rev("repo", "direct") == ""
    assert len(host.requests()) == seen, "nothing reached the host"
    guard = jsonl(state / audit_log_path(naming.ROLE_GUARD))
    assert any(line["verdict"] == "deny" and line["rule"] == "git-push" and line["host"] == HOST for line in guard)

    # -- the host saw the real credential, from the gate; the agent never held it
    requests = host.requests()
    pushes = [r for r in requests if r["service"] == "git-receive-pack" and r["method"] == "POST"]
    assert pushes and all(r["auth_ok"] and r["user"] == USER for r in pushes)
    assert not [r for r in requests if r["user"] and not r["auth_ok"]]
    gate = naming.resource_name(naming.ROLE_GIT_GATE, identity)
    held = engine.adapter.exec(gate, ["python3", "-c", "import json; print(len(json.load(open('/run/bottle-secrets.json'))['BOTTLE_GIT_TOKEN_0']))"])
    assert held.stdout.strip() == str(len(token)).encode(), "the gate holds the credential"
    half = len(token) // 2
    probe = f'p="{token[:half]}""{token[half:]}"; '
    rc, out = sh(probe + 'n=0; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do'
                 ' tr "\\0" "\\n" < "$f" 2>/dev/null | grep -q -F -- "$p" && n=$((n+1)); done; echo "procs $n";'
                 ' echo "env $(env | grep -c -F -- "$p")"')
    assert "procs 0" in out and "env 0" in out, out
    root = engine.adapter.exec(agent, ["grep", "-r", "-l", "-F", "-s", "--exclude-dir=proc", "--exclude-dir=sys",
                                       "--exclude-dir=dev", "--", token, "/"], user="0")
    # grep exits 1 for no match, 2 when some file could not be read (root has no capabilities there)
    assert root.exit_code in (1, 2) and root.stdout == b"", root

    # -- every push and its verdict is in the bottle's audit log, on the host, without secrets
    audit_file = state / audit_log_path(naming.ROLE_GIT_GATE)
    lines = jsonl(audit_file)
    pushes_audited = [line for line in lines if line["event"] == "push"]
    rules = {(line["route"], line["verdict"], line["rule"]) for line in pushes_audited}
    assert {("origin", "allow", "ok"), ("origin", "deny", "secret-found"),
            ("origin", "deny", "protected-non-fast-forward"), ("fixtures", "allow", "ok")} <= rules, rules
    assert any("app/conf.py:2: aws-access-key-id" in f for line in pushes_audited for f in line.get("findings", []))
    assert all(line["identity"] == identity and line["role"] == "git-gate" for line in lines)
    text = audit_file.read_text()
    assert token not in text and AWS_KEY not in text

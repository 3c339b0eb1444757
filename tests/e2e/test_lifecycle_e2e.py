"""``bottle start`` end to end on every real engine: confinement, exit codes, teardown, interrupts, bad input."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import GENERIC_IMAGE, RUN_ID, RUN_LABEL, STUB_BODY, Bottle, Engine, Stub, agent_manifest, wait_for_agent

from bottle.core import naming
from bottle.core.state import BottleMetadata, encode_metadata
from bottle.ports.runtime import ContainerSpec

pytestmark = pytest.mark.e2e
READY_MARKER = "READY-FOR-ROOT-GREP"
DONE_FILE = ".e2e-done"

# Runs inside the agent. The secret's prefix is split in the script's text so
# that the script itself (in the process list) never holds it; any copy of the
# secret would hold the prefix.
AGENT_SCRIPT = r"""
set -u
p="{prefix_a}""{prefix_b}"
echo "IDENTITY $BOTTLE_IDENTITY"
ok=no; body=
for i in $(seq 1 150); do
  body=$(curl -s --max-time 3 http://allowed.test:{port}/ 2>/dev/null) && [ "$body" = "{body}" ] && {{ ok=yes; break; }}
  sleep 0.2
done
echo "CHECK allowed $ok"
echo "CHECK denied-http $(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://denied.test/)"
echo "CHECK denied-https $(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 https://denied.test/)"
python3 - <<'EOF'
import socket
for addr in (("1.1.1.1", 443), ("8.8.8.8", 53), ("93.184.215.14", 80)):
    try:
        socket.create_connection(addr, 3).close()
        print("CHECK raw-tcp connected", addr[0])
    except OSError as exc:
        print("CHECK raw-tcp refused", addr[0], type(exc).__name__)
EOF
getent hosts example.com >/dev/null 2>&1; echo "CHECK dns-getent-exit $?"
python3 -c 'import socket; socket.getaddrinfo("example.com", 443)' 2>/dev/null; echo "CHECK dns-python-exit $?"
echo "CHECK env-matches $(env | grep -c -F -- "$p")"
n=0; for f in /proc/[0-9]*/environ; do c=$(tr '\0' '\n' < "$f" 2>/dev/null); case "$c" in *"$p"*) n=$((n+1));; esac; done
echo "CHECK proc-environ-matches $n"
n=0; for f in /proc/[0-9]*/cmdline; do c=$(tr '\0' ' ' < "$f" 2>/dev/null); case "$c" in *"$p"*) n=$((n+1));; esac; done
echo "CHECK cmdline-matches $n"
psout=$(ps -eo args); echo "CHECK ps-lines $(printf '%s\n' "$psout" | wc -l)"
echo "CHECK ps-matches $(printf '%s\n' "$psout" | grep -c -F -- "$p")"
echo "CHECK files-as-agent [$(grep -r -l -F -s --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -- "$p" / 2>/dev/null | head -5 | tr '\n' ' ')]"
echo "CHECK uid $(id -u)"
python3 -c "$IO_URING_PROBE"; echo "CHECK io-uring-exit $?"
unshare -Ur true 2>/dev/null; echo "CHECK unshare-exit $?"
echo written > /workspace/written-by-agent
echo "{ready}"
for i in $(seq 1 300); do [ -e /workspace/{done} ] && break; sleep 0.2; done
exit 42
"""


# Exits with the errno io_uring_setup(1, NULL) answers: ENOSYS (38) from
# bottle's syscall policy; the kernel itself would answer EFAULT (14).
IO_URING_PROBE = (
    "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
    "sys.exit(ctypes.get_errno() if libc.syscall(425, 1, 0) == -1 else 0)"
)


def checks(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("CHECK "):
            name, _, rest = line[6:].partition(" ")
            found.setdefault(name, []).append(rest)
    return found


def identity_of(stdout: str) -> str:
    match = re.search(r"^IDENTITY (\S+)$", stdout, re.M)
    assert match, stdout
    return match.group(1)


def one_clear_error(result: subprocess.CompletedProcess[str]) -> str:
    """The refusal is one ``error:`` line (engine words may follow) with a hint and no traceback."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert any(line.startswith("hint: ") for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    assert result.returncode != 0
    return errors[0]


def stream(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines




def owned(path: Path, engine: Engine, uid: int, gid: int | None = None) -> None:
    os.chown(path, uid, gid if gid is not None else uid)


# -- the must-show run ----------------------------------------------------------------------


def test_a_bottle_confines_the_agent_and_leaves_nothing(bottle: Bottle, engine: Engine, stub) -> None:  # type: ignore[no-untyped-def]
    expected_uid = engine.uid if engine.user is not None else 4321
    owned(bottle.project, engine, expected_uid)
    half = len(bottle.secret_prefix) // 2
    script = AGENT_SCRIPT.format(
        prefix_a=bottle.secret_prefix[:half], prefix_b=bottle.secret_prefix[half:], port=8000, body=STUB_BODY,
        ready=READY_MARKER, done=DONE_FILE,
    )
    root_grep: subprocess.CompletedProcess[bytes] | None = None
    guard_io_uring: int | None = None
    with stub(bottle.agent) as upstream:
        proc = bottle.popen("start", bottle.agent, "-y", "--", "bash", "-c", f"IO_URING_PROBE='{IO_URING_PROBE}'\n{script}")
        lines = stream(proc)
        out: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            out.append(line)
            if line.strip() == READY_MARKER:
                # Files the agent's user cannot read: grep them as root in the agent container.
                agent = naming.resource_name(naming.ROLE_AGENT, identity_of("".join(out)))
                result = engine.adapter.exec(
                    agent,
                    ["grep", "-r", "-l", "-F", "-s", "--exclude-dir=proc", "--exclude-dir=sys", "--exclude-dir=dev",
                     "--", bottle.secret_prefix, "/"],
                    user="0",
                )
                root_grep = subprocess.CompletedProcess([], result.exit_code, result.stdout, result.stderr)
                guard = naming.resource_name(naming.ROLE_GUARD, identity_of("".join(out)))
                guard_io_uring = engine.adapter.exec(guard, ["python3", "-c", IO_URING_PROBE]).exit_code
                (bottle.project / DONE_FILE).touch()
        proc.wait(timeout=120)
        stderr = proc.stderr.read() if proc.stderr else ""
    stdout = "".join(out)
    found = checks(stdout)
    identity = identity_of(stdout)

    assert proc.returncode == 42, f"{stdout}\n{stderr}"
    assert upstream.error is None, upstream.error
    assert upstream.secret_length == len(bottle.secret), "the brokered secret is in the egress proxy"
    assert found["allowed"] == ["yes"], stdout
    assert found["denied-http"] == ["403"], stdout
    # Straight to the guard the CONNECT is refused (curl reports 000); through the
    # egress proxy the tunnel to the agent is up and the proxy answers inside it
    # (502: the guard refused its CONNECT). Either way nothing got through.
    assert found["denied-https"] in (["403"], ["502"], ["000"]), stdout
    assert all(line.startswith("refused") for line in found["raw-tcp"]), stdout
    assert found["dns-getent-exit"] != ["0"] and found["dns-python-exit"] != ["0"], stdout
    for name in ("env-matches", "proc-environ-matches", "cmdline-matches", "ps-matches"):
        assert found[name] == ["0"], (name, stdout)
    assert int(found["ps-lines"][0]) >= 3, "ps saw the agent's processes"
    assert found["files-as-agent"] == ["[]"], stdout
    # grep exits 1 for no match, 2 when some file could not be read (root has no capabilities there)
    assert root_grep is not None and root_grep.returncode in (1, 2) and root_grep.stdout == b"", root_grep
    assert found["uid"] == [str(expected_uid)]
    # bottle's syscall policy, not the engine's default, in the agent and in a sidecar
    assert (found["io-uring-exit"], found["unshare-exit"]) == (["38"], ["1"]), stdout
    assert guard_io_uring == 38
    written = bottle.project / "written-by-agent"
    assert written.read_text() == "written\n" and written.stat().st_uid == expected_uid
    assert bottle.secret not in stdout and bottle.secret not in stderr
    # nothing left: no container, network, image or volume of the bottle, no state
    assert bottle.leftovers() == {}
    assert engine.leftovers({naming.LABEL_IDENTITY: identity}) == {}
    assert identity not in bottle.states() and bottle.states() == []


def test_files_belong_to_the_user_who_ran_sudo(bottle: Bottle, engine: Engine) -> None:
    """Rootful engines: root via sudo runs the agent as SUDO_UID; rootless: as the engine's user (keep-id)."""
    uid = 4400 if engine.user is None else engine.uid
    owned(bottle.project, engine, uid)
    extra = {"SUDO_UID": "4400", "SUDO_GID": "4400"} if engine.user is None else {}
    result = bottle.start("bash", "-c", "id -u; mkdir /workspace/dir && touch /workspace/dir/f", extra_env=extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(uid)]
    assert (bottle.project / "dir" / "f").stat().st_uid == uid
    assert (bottle.project / "dir").stat().st_uid == uid
    assert bottle.leftovers() == {} and bottle.states() == []


def test_two_starts_in_the_same_directory_at_once(bottle: Bottle) -> None:
    procs = [
        bottle.popen("start", bottle.agent, "-y", "--", "bash", "-c", 'echo "IDENTITY $BOTTLE_IDENTITY"; sleep 2')
        for _ in range(2)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    identities = {identity_of(out) for out, _ in results}
    assert len(identities) == 2
    assert bottle.leftovers() == {} and bottle.states() == []


def test_an_interrupt_at_every_step_boundary_leaves_nothing(bottle: Bottle) -> None:
    hook = "BOTTLE_TEST_INTERRUPT_AFTER_STEP"
    n, total = 1, None
    while total is None or n <= total:
        result = bottle.start("true", extra_env={hook: str(n)})
        match = re.search(r"interrupting after step (\d+) of (\d+)", result.stderr)
        assert match and int(match.group(1)) == n, result.stderr
        total = int(match.group(2))
        assert result.returncode == 130, result.stderr
        assert "interrupted" in result.stderr
        assert bottle.leftovers() == {}, (n, result.stderr)
        assert bottle.states() == [], n
        n += 1
    assert total >= 15, "a bottle with a route has at least fifteen steps"


def test_ctrl_c_while_the_agent_runs(bottle: Bottle, engine: Engine) -> None:
    proc = bottle.popen("start", bottle.agent, "-y", "--", "sleep", "120")
    wait_for_agent(engine, bottle.agent)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert bottle.leftovers() == {} and bottle.states() == []


def test_copy_cwd_leaves_the_project_untouched(bottle: Bottle) -> None:
    result = bottle.run(
        "start", bottle.agent, "--copy-cwd", "-y", "--", "bash", "-c",
        "cat /workspace/README.md; echo changed > /workspace/README.md; touch /workspace/new; stat -c %u /workspace/README.md",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "a project"
    assert (bottle.project / "README.md").read_text() == "a project\n"
    assert sorted(p.name for p in bottle.project.iterdir()) == ["README.md"]
    assert bottle.leftovers() == {} and bottle.states() == []


def test_a_killed_launcher_is_cleaned_up(bottle: Bottle, engine: Engine) -> None:
    proc = bottle.popen("start", bottle.agent, "-y", "--", "sleep", "120")
    wait_for_agent(engine, bottle.agent)
    (identity,) = bottle.states()
    # The launcher itself (under runuser it is not the process we started).
    launcher = json.loads((bottle.state_root / identity / "launcher.json").read_text())
    os.kill(launcher["pid"], signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert bottle.leftovers(), "a SIGKILLed launcher leaves its bottle behind"

    rows = json.loads(bottle.run("ls", "--format", "json").stdout)
    mine = [r for r in rows if r["agent"] == bottle.agent]
    assert len(mine) == 1 and mine[0]["status"] == "orphaned"
    dry = bottle.run("cleanup", "--dry-run")
    assert dry.returncode == 0 and f"would remove container bottle-agent-{mine[0]['identity']}" in dry.stdout
    assert bottle.leftovers(), "--dry-run removes nothing"
    done = bottle.run("cleanup")
    assert done.returncode == 0, done.stderr
    assert re.search(r"removed \d+ containers?, 2 networks, 0 images and the state of 1 bottle", done.stdout), done.stdout
    assert bottle.leftovers() == {} and bottle.states() == []
    assert "no bottles" in bottle.run("ls").stdout or bottle.agent not in bottle.run("ls").stdout


def test_resume_after_a_preserved_teardown(bottle: Bottle, engine: Engine) -> None:
    proc = bottle.popen("start", bottle.agent, "-y", "--", "bash", "-c", "echo kept > ~/note; sleep 3")
    # A launch clears a stale marker once the bottle is up: mark it while the agent runs.
    wait_for_agent(engine, bottle.agent)
    (identity,) = bottle.states()
    marker = bottle.state_root / identity / ".preserve"
    marker.touch()
    os.chown(marker, bottle.engine.uid, bottle.engine.gid)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"bottle resume {identity}" in err
    assert bottle.states() == [identity] and bottle.leftovers() == {}

    again = bottle.run("resume", identity, "-y", "--", "bash", "-c", 'cat ~/note; echo "$BOTTLE_IDENTITY"')
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["kept", identity]
    assert bottle.states() == [] and bottle.leftovers() == {}


# -- bad input: one clear line, a hint, a non-zero exit, nothing created -----------------------


def test_unknown_agent(bottle: Bottle) -> None:
    result = bottle.start("true", agent="no-such-agent")
    line = one_clear_error(result)
    assert result.returncode == 2 and "no agent named 'no-such-agent'" in line
    assert bottle.states() == [] and bottle.engine.leftovers({naming.LABEL_AGENT: "no-such-agent"}) == {}


def test_missing_secret(bottle: Bottle) -> None:
    result = bottle.start("true", extra_env={"E2E_TOKEN": ""})
    line = one_clear_error(result)
    assert result.returncode == 2 and "missing secret(s) env:E2E_TOKEN" in line
    assert bottle.states() == [] and bottle.leftovers() == {}


def test_a_failing_dockerfile_shows_the_builds_last_lines(bottle: Bottle) -> None:
    context = bottle.home / "agent-image"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo 'e2e: the step before the failure' && exit 3\n"
    )
    for path in (context, context / "Dockerfile"):
        os.chown(path, bottle.engine.uid, bottle.engine.gid)
    manifest = agent_manifest(GENERIC_IMAGE, routes=False)
    manifest.pop("image")
    manifest["dockerfile"] = str(context / "Dockerfile")
    bottle.write_manifest({bottle.agent: manifest})
    result = bottle.start("true")
    line = one_clear_error(result)
    assert "build image" in line and "failed" in line
    assert "e2e: the step before the failure" in result.stderr.split(line, 1)[1], result.stderr
    assert bottle.states() == [] and bottle.leftovers() == {}


def test_the_engine_not_running(bottle: Bottle, engine: Engine) -> None:
    gone = "unix:///tmp/bottle-e2e-no-engine.sock"
    extra = {"DOCKER_HOST": gone} if engine.runtime_flag == "docker" else {"BOTTLE_PODMAN_URL": gone}
    result = bottle.start("true", extra_env=extra)
    one_clear_error(result)
    assert result.returncode == 1
    assert bottle.states() == [] and bottle.leftovers() == {}


def test_a_name_conflict(bottle: Bottle, engine: Engine) -> None:
    identity = f"{bottle.agent}-zz{RUN_ID[:3]}"
    state = bottle.state_root / identity
    state.mkdir(parents=True)
    metadata = BottleMetadata(identity, bottle.agent, str(bottle.project), False, datetime.now(timezone.utc),
                              engine.runtime_flag, (str(bottle.manifest),))
    (state / "metadata.json").write_bytes(encode_metadata(metadata))
    for path in [bottle.home / "state", *(bottle.home / "state").rglob("*")]:
        os.chown(path, engine.uid, engine.gid)
    taken = naming.resource_name(naming.ROLE_GUARD, identity)
    engine.adapter.create_container(ContainerSpec(name=taken, image=GENERIC_IMAGE, command=("true",),
                                                  labels={RUN_LABEL: RUN_ID}))
    try:
        result = bottle.run("resume", identity, "-y", "--", "true")
        line = one_clear_error(result)
        assert result.returncode == 2 and f"named {taken} already exists" in line
        assert engine.backdoor.container(taken) is not None, "not bottle's to remove"
        assert bottle.leftovers() == {}
    finally:
        engine.adapter.remove_container(taken, force=True)


def test_resume_of_a_bottle_without_state(bottle: Bottle) -> None:
    result = bottle.run("resume", f"{bottle.agent}-00000", "-y")
    line = one_clear_error(result)
    assert result.returncode == 2 and "no state of bottle" in line


# -- an interactive terminal ----------------------------------------------------------------------


def test_an_interactive_terminal(bottle: Bottle, engine: Engine) -> None:
    """Without `-- CMD` the agent gets this terminal: its size, Ctrl-C for the shell inside, the exit code."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    env = engine.env(bottle.home, bottle.env(None))
    argv = engine.argv(["start", bottle.agent, "-y"], env)
    pid, fd = pty.fork()
    if pid == 0:  # the child: bottle on a terminal
        try:
            os.chdir(bottle.project)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    seen = b""

    def until(pattern: bytes, timeout: float = 120) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while pattern not in seen:
            assert time.monotonic() < deadline, f"never saw {pattern!r} in {seen[-2000:]!r}"
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                assert data, f"the terminal closed before {pattern!r}: {seen[-2000:]!r}"
                seen += data

    until(b"/workspace$ ")
    # The engine CLI sets the size just after the start, so a prompt can come
    # before it; the size must arrive within seconds, as a person would see it.
    os.write(fd, b"for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size); [ \"$s\" = \"40 100\" ] && break; sleep 0.5; done; "
                 b"echo size-$((1+1))-is-$s-$((5+5))done\r")
    until(b"-10done")
    os.write(fd, b"sleep 60\r")
    time.sleep(1)
    os.write(fd, b"\x03")  # Ctrl-C: the sleep inside stops, the bottle does not
    os.write(fd, b"echo after-$((3+4))-ctrl-c; exit 7\r")
    until(b"after-7-ctrl-c")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"size-2-is-40 100-10done" in seen, seen[-2000:]
    assert os.waitstatus_to_exitcode(status) == 7
    assert bottle.leftovers() == {} and bottle.states() == []

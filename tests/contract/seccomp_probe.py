"""Run inside a container (``python3 -c``): what each syscall of interest answers, and whether ordinary work runs.

Prints one JSON object: ``calls`` maps a probe name to the errno the call
answered (0 when it succeeded), ``work`` maps a piece of ordinary work to
``"ok"`` or what went wrong. Every call runs in a forked child, so a call
that succeeds (a new namespace, a key) changes nothing for the next one.

The arguments are chosen so that the kernel itself, reached without a
filter, would answer something else than the filter's errno wherever it can
(a bad pointer gives EFAULT, a bad file descriptor EBADF, a bad operation
EINVAL or EOPNOTSUPP, a namespace inside a user namespace success). The few
calls whose own capability check answers EPERM before anything else (module,
kexec and reboot calls on a kernel with them) are told apart by the contract
test's marked profile.

Standard library only: it runs on the bare base image.
"""

import ctypes
import json
import os
import platform
import socket
import subprocess
import sys
import threading

# Syscall numbers: the generic (asm-generic) table for aarch64, x86_64's own.
# io_uring_* and clone3 share numbers on every architecture.
NUMBERS = {
    "x86_64": {
        "clone": 56, "unshare": 272, "setns": 308, "keyctl": 250, "add_key": 248, "request_key": 249,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "open_by_handle_at": 304,
        "name_to_handle_at": 303, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "personality": 135, "socket": 41,
        "mount": 165,
    },
    "aarch64": {
        "clone": 220, "unshare": 97, "setns": 268, "keyctl": 219, "add_key": 217, "request_key": 218,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "open_by_handle_at": 265,
        "name_to_handle_at": 264, "init_module": 105, "finit_module": 273, "delete_module": 106,
        "kexec_load": 104, "kexec_file_load": 294, "reboot": 142, "personality": 92, "socket": 198,
        "mount": 40,
    },
}
for table in NUMBERS.values():
    table.update({"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435})

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
SIGCHLD = 17

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = NUMBERS[platform.machine()]
L = ctypes.c_long


def raw(name, *args):
    """errno of ``syscall(name, *args)``, 0 when it succeeded."""
    ctypes.set_errno(0)
    result = libc.syscall(L(NR[name]), *[L(a) for a in args])
    return ctypes.get_errno() if result == -1 else 0


def clone_flags(flags):
    # A fork-like raw clone: the child (result 0) leaves at once.
    ctypes.set_errno(0)
    result = libc.syscall(L(NR["clone"]), L(flags | SIGCHLD), L(0), L(0), L(0), L(0))
    if result == 0:
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
        return 0
    return ctypes.get_errno()


CALLS = {
    "io_uring_setup": lambda: raw("io_uring_setup", 1, 0),  # NULL params: EFAULT from the kernel
    "io_uring_enter": lambda: raw("io_uring_enter", -1, 0, 0, 0, 0, 0),  # EBADF
    "io_uring_register": lambda: raw("io_uring_register", -1, 0, 0, 0),  # EBADF
    # Each namespace with a user namespace around it: the kernel alone lets an
    # unprivileged process make all of them that way.
    "unshare_user": lambda: raw("unshare", CLONE_NEWUSER),
    "unshare_mount": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWNS),
    "unshare_net": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWNET),
    "unshare_pid": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWPID),
    "unshare_ipc": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWIPC),
    "unshare_uts": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWUTS),
    "unshare_cgroup": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWCGROUP),
    "unshare_time": lambda: raw("unshare", CLONE_NEWUSER | CLONE_NEWTIME),
    "clone_user": lambda: clone_flags(CLONE_NEWUSER),
    "clone_net": lambda: clone_flags(CLONE_NEWUSER | CLONE_NEWNET),
    "clone3": lambda: raw("clone3", 0, 0),  # size 0: EINVAL from the kernel
    "setns": lambda: raw("setns", -1, 0),  # EBADF
    "keyctl": lambda: raw("keyctl", 0x7FFF, 0, 0, 0, 0),  # no such operation: EOPNOTSUPP
    "add_key": lambda: raw("add_key", 0, 0, 0, 0, 0),  # EFAULT
    "request_key": lambda: raw("request_key", 0, 0, 0, 0),  # EFAULT
    "bpf": lambda: raw("bpf", 0x7FFF, 0, 0),
    "perf_event_open": lambda: raw("perf_event_open", 0, 0, -1, -1, 0),  # EFAULT
    "userfaultfd": lambda: raw("userfaultfd", 1 | 2),  # user-mode only, plus a bad flag: EINVAL
    "open_by_handle_at": lambda: raw("open_by_handle_at", -1, 0, 0),
    "name_to_handle_at": lambda: raw("name_to_handle_at", -1, 0, 0, 0, 0),  # EFAULT
    "init_module": lambda: raw("init_module", 0, 0, 0),
    "finit_module": lambda: raw("finit_module", -1, 0, 0),
    "delete_module": lambda: raw("delete_module", 0, 0),
    "kexec_load": lambda: raw("kexec_load", 0, 0, 0, 0),
    "kexec_file_load": lambda: raw("kexec_file_load", -1, -1, 0, 0, 0),
    "reboot": lambda: raw("reboot", 0, 0, 0, 0),
    "mount": lambda: raw("mount", 0, 0, 0, 0, 0),  # EFAULT
    "personality_query": lambda: raw("personality", 0xFFFFFFFF),
    "personality_no_aslr": lambda: raw("personality", 0x0040000),  # ADDR_NO_RANDOMIZE
    "socket_alg": lambda: raw("socket", 38, 5, 0),  # AF_ALG, SOCK_SEQPACKET
    "socket_vsock": lambda: raw("socket", 40, 1, 0),  # AF_VSOCK, SOCK_STREAM
    "socket_unix": lambda: _close_ok(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
}


def _close_ok(sock):
    sock.close()
    return 0


def in_child(check):
    """Run ``check`` in a forked child; its result, or a negative number if it died (SIGSYS, say)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            value = check()
        except BaseException as exc:  # the parent reports it
            value = repr(exc)
        os.write(write, json.dumps(value).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while True:
        chunk = os.read(read, 4096)
        if not chunk:
            break
        data += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return json.loads(data) if data else "no answer"


def work_threads():
    seen = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(8)), seen


def work_fork_and_pipe():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b"from the child")
        os._exit(7)
    os.close(write)
    assert os.read(read, 100) == b"from the child"
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 7, status


def work_exec():
    out = subprocess.run(["sh", "-c", "echo exec works"], capture_output=True, check=True)
    assert out.stdout == b"exec works\n", out


def work_posix_spawn():
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ))
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, status


def work_python():
    out = subprocess.run([sys.executable, "-c", "import json; print(json.dumps([1, 2]))"], capture_output=True, check=True)
    assert out.stdout == b"[1, 2]\n", out


def work_peer():
    peer = os.environ.get("PROBE_PEER")
    if not peer:
        return "skipped: no PROBE_PEER"
    host, port = peer.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"ping\n")
        answer = conn.recv(100)
    assert answer == b"pong\n", answer
    return "ok"


def _missing(tool):
    if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
        return f"skipped: no {tool} in the image"
    return None


def work_git():
    skipped = _missing("git")
    if skipped:
        return skipped
    script = (
        "set -e; cd \"$(mktemp -d)\"; git init -q r; cd r; echo hi > f; git add f; "
        "git -c user.name=p -c user.email=p@example.invalid commit -qm one; git log --oneline | wc -l"
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True)
    assert out.stdout.strip() == b"1", out
    return "ok"


def work_node():
    skipped = _missing("node")
    if skipped:
        return skipped
    script = (
        "const {execFileSync} = require('child_process');"
        "const {Worker} = require('worker_threads');"
        "const fs = require('fs');"
        "fs.writeFileSync('/tmp/node-probe', 'x');"
        "const out = execFileSync('sh', ['-c', 'echo child']).toString();"
        "new Worker('require(\"worker_threads\").parentPort.postMessage(2)', {eval: true})"
        ".on('message', m => { console.log(out.trim() + ' ' + m + ' ' + fs.readFileSync('/tmp/node-probe')); });"
    )
    out = subprocess.run(["node", "-e", script], capture_output=True, check=True)
    assert out.stdout == b"child 2 x\n", out
    return "ok"


WORK = {
    "threads": work_threads,
    "fork_and_pipe": work_fork_and_pipe,
    "exec": work_exec,
    "posix_spawn": work_posix_spawn,
    "python3_subprocess": work_python,
    "socket_to_peer": work_peer,
    "git": work_git,
    "node": work_node,
}


def run_work(name):
    try:
        return WORK[name]() or "ok"
    except Exception as exc:  # reported, not raised: the test shows every failure at once
        return f"{type(exc).__name__}: {exc}"[:500]


def main():
    print(json.dumps({
        "calls": {name: in_child(check) for name, check in CALLS.items()},
        "work": {name: run_work(name) for name in WORK},
    }, sort_keys=True))


if __name__ == "__main__":
    main()

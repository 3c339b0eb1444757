"""Security options are what a process inside the container observes."""

from __future__ import annotations

# Reads the limits where cgroup v1 (hybrid, as here) or v2 puts them; with
# no pids file, forks until the kernel refuses, bounded.
LIMITS_PROBE = """
import os, time
def first(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return None
pids = first('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max')
if pids is None:
    children = []
    try:
        for _ in range(200):
            pid = os.fork()
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            children.append(pid)
        pids = 'unlimited'
    except OSError:
        pids = 'about %d' % (len(children) + 1)
memory = first('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max')
print(pids)
print(memory)
"""


def _status_field(text: str, field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(field + ":"))


class TestSecurityContract:
    def test_user_capabilities_no_new_privileges_and_read_only_root(self, runtime, make_container, needs_processes):
        name = make_container(
            user="1000:1000",
            cap_drop=("ALL",),
            no_new_privileges=True,
            read_only_rootfs=True,
            tmpfs={"/tmp": "rw,size=16m"},
        )
        ids = runtime.exec(name, ["sh", "-c", "id -u; id -g"])
        assert ids.stdout.decode().split() == ["1000", "1000"]
        status = runtime.exec(name, ["cat", "/proc/self/status"]).stdout.decode()
        assert int(_status_field(status, "CapEff"), 16) == 0
        assert _status_field(status, "NoNewPrivs") == "1"
        root = runtime.exec(name, ["touch", "/bottle-probe"])
        assert root.exit_code != 0 and b"Read-only file system" in root.stderr
        scratch = runtime.exec(name, ["touch", "/tmp/bottle-probe"])
        assert scratch.exit_code == 0, scratch.stderr

    def test_added_capabilities_are_the_only_ones_left(self, runtime, make_container, needs_processes):
        name = make_container(cap_drop=("ALL",), cap_add=("NET_BIND_SERVICE",))
        status = runtime.exec(name, ["cat", "/proc/self/status"]).stdout.decode()
        assert int(_status_field(status, "CapEff"), 16) == 1 << 10  # CAP_NET_BIND_SERVICE

    def test_pids_and_memory_limits_are_what_the_container_sees(self, runtime, make_container, needs_limits, needs_processes):
        name = make_container(pids_limit=64, memory_bytes=64 * 1024 * 1024)
        result = runtime.exec(name, ["python3", "-c", LIMITS_PROBE])
        assert result.exit_code == 0, result.stderr
        pids, memory = result.stdout.decode().split("\n")[:2]
        assert pids == "64" or pids.startswith("about")
        if pids.startswith("about"):
            assert int(pids.split()[1]) <= 64
        assert memory == str(64 * 1024 * 1024)

"""The adapters' pure parts: Podman socket discovery, spec translation, stream framing, tar packing."""

from __future__ import annotations

import struct
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from bottle.adapters._archive import pack, unpack
from bottle.adapters.podman.runtime import ROOTFUL_SOCKET, podman_socket_candidates
from bottle.adapters.podman.specgen import container_specgen
from bottle.adapters.podman.streams import demux, join_frames
from bottle.ports.runtime import ContainerSpec, FileEntry, Mount, NetworkAttachment


class TestPodmanSocketCandidates:
    def test_root_gets_the_rootful_socket_first(self):
        assert podman_socket_candidates(0, {})[0] == ROOTFUL_SOCKET

    def test_a_user_gets_their_runtime_dir_socket_first(self):
        found = podman_socket_candidates(1001, {"XDG_RUNTIME_DIR": "/run/user/1001"})
        assert found[0] == "unix:///run/user/1001/podman/podman.sock"

    def test_without_xdg_runtime_dir_the_uid_names_it(self):
        assert podman_socket_candidates(1234, {})[0] == "unix:///run/user/1234/podman/podman.sock"

    def test_explicit_settings_win_bottles_own_first(self):
        env = {"CONTAINER_HOST": "unix:///a.sock", "BOTTLE_PODMAN_URL": "unix:///b.sock"}
        assert podman_socket_candidates(0, env) == ["unix:///b.sock", "unix:///a.sock"]
        assert podman_socket_candidates(1000, {"CONTAINER_HOST": "unix:///a.sock"}) == ["unix:///a.sock"]

    def test_rootless_flag_overrides_who_runs_it(self):
        assert podman_socket_candidates(0, {"XDG_RUNTIME_DIR": "/run/user/0"}, rootless=True)[0] == "unix:///run/user/0/podman/podman.sock"
        assert podman_socket_candidates(1001, {}, rootless=False)[0] == ROOTFUL_SOCKET


class TestSpecgen:
    def test_everything_in_the_spec_reaches_the_create_body(self):
        spec = ContainerSpec(
            name="bottle-agent-x",
            image="localhost/img:1",
            command=("sleep", "1"),
            entrypoint=("/bin/sh", "-c"),
            env={"A": "1"},
            labels={"io.bottle.role": "agent"},
            networks=(NetworkAttachment("int", ("agent",)), NetworkAttachment("egr")),
            mounts=(Mount("/host/ro", "/ro", read_only=True), Mount("/host/rw", "/rw")),
            tmpfs={"/tmp": "rw,size=16m"},
            user="1000:1000",
            workdir="/work",
            hostname="agent",
            cap_drop=("ALL",),
            cap_add=("NET_BIND_SERVICE",),
            no_new_privileges=True,
            read_only_rootfs=True,
            pids_limit=64,
            memory_bytes=1 << 26,
            tty=True,
            stdin_open=True,
            userns="keep-id",
        )
        body = container_specgen(spec)
        assert body["Networks"] == {"int": {"aliases": ["agent"]}, "egr": {"aliases": []}}
        assert body["netns"] == {"nsmode": "bridge"}
        assert {"type": "bind", "source": "/host/ro", "destination": "/ro", "options": ["rbind", "ro"]} in body["mounts"]
        assert {"type": "tmpfs", "source": "tmpfs", "destination": "/tmp", "options": ["rw", "size=16m"]} in body["mounts"]
        assert body["resource_limits"] == {"pids": {"limit": 64}, "memory": {"limit": 1 << 26}}
        assert body["userns"] == {"nsmode": "keep-id"}
        assert (body["user"], body["work_dir"], body["hostname"]) == ("1000:1000", "/work", "agent")
        assert (body["cap_drop"], body["cap_add"]) == (["ALL"], ["NET_BIND_SERVICE"])
        assert body["no_new_privileges"] and body["read_only_filesystem"] and body["terminal"] and body["stdin"]
        assert (body["command"], body["entrypoint"]) == (["sleep", "1"], ["/bin/sh", "-c"])

    def test_unset_options_are_left_to_the_engine(self):
        body = container_specgen(ContainerSpec(name="n", image="i"))
        assert not {"command", "entrypoint", "user", "mounts", "resource_limits", "userns", "Networks"} & body.keys()


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=64)), max_size=12))
def test_demux_separates_what_was_interleaved(chunks):
    data = b"".join(_frame(stream, payload) for stream, payload in chunks)
    out, err = demux(data)
    assert out == b"".join(p for s, p in chunks if s == 1)
    assert err == b"".join(p for s, p in chunks if s == 2)
    assert join_frames(data) == b"".join(p for _, p in chunks)


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))


@given(
    st.dictionaries(
        _names,
        st.tuples(st.binary(max_size=128), st.integers(0, 0o7777), st.integers(0, 65535), st.integers(0, 65535)),
        max_size=8,
    )
)
def test_pack_then_unpack_keeps_content_mode_and_owner(files):
    entries = [FileEntry(path=name, content=c, mode=m, uid=u, gid=g) for name, (c, m, u, g) in files.items()]
    assert sorted(unpack([pack(entries)]), key=lambda e: e.path) == sorted(entries, key=lambda e: e.path)


def test_a_packed_archive_ends_at_its_end_blocks_without_record_padding():
    # Podman's copier stops reading at the end blocks; padding after them
    # makes the upload fail with a broken pipe.
    data = pack([FileEntry(path="a/b.txt", content=b"x" * 1000, mode=0o600), FileEntry(path="c", content=b"", mode=0o644)])
    assert len(data) == 512 + 1024 + 512 + 1024
    assert data.endswith(b"\0" * 1024) and data[-1536:-1024] != b"\0" * 512


def test_importing_the_adapters_does_not_import_the_sdks():
    code = (
        "import sys\n"
        "import bottle.adapters.docker.runtime, bottle.adapters.podman.runtime, bottle.adapters.memory.runtime\n"
        "print(sorted(m for m in ('docker', 'podman', 'requests') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_podman_spurious_failures_are_retried_a_few_times_and_others_are_not():
    from types import SimpleNamespace

    from bottle.adapters.podman.runtime import _RETRY_ATTEMPTS, _retry_spurious

    def engine(*answers):
        calls = []

        def send():
            calls.append(1)
            return answers[min(len(calls), len(answers)) - 1]

        return send, calls

    broken = SimpleNamespace(status_code=500, text='{"message":"write |1: broken pipe"}')
    other = SimpleNamespace(status_code=500, text='{"message":"no space left on device"}')
    ok = SimpleNamespace(status_code=200, text="")
    send, calls = engine(broken, ok)
    assert _retry_spurious(send, "broken pipe") is ok and len(calls) == 2
    send, calls = engine(other)
    assert _retry_spurious(send, "broken pipe") is other and len(calls) == 1
    send, calls = engine(broken)
    assert _retry_spurious(send, "broken pipe") is broken and len(calls) == _RETRY_ATTEMPTS

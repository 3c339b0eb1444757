"""Networks: create/list/remove, and what an internal network lets through (checked from inside)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bottle.ports.errors import NameConflict, NotFound
from bottle.ports.runtime import ContainerSpec, NetworkAttachment, NetworkSpec
from contract_support import BASE_IMAGE, CASE_LABEL, RUN_ID, RUN_LABELS

SERVER = (
    "python3",
    "-c",
    "import socket\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8080))\n"
    "s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.sendall(b'pong\\n')\n"
    "    c.close()\n",
)

# Retries while the peer's server starts; prints what the peer said.
CLIENT = (
    "import socket, sys, time\n"
    "deadline = time.time() + 20\n"
    "while True:\n"
    "    try:\n"
    "        s = socket.create_connection((sys.argv[1], 8080), timeout=5)\n"
    "        print(s.recv(16).decode().strip())\n"
    "        break\n"
    "    except OSError:\n"
    "        if time.time() > deadline: raise\n"
    "        time.sleep(0.3)\n"
)

RAW_DNS_PROBE = """
import socket, struct, sys
name = sys.argv[1]
query = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0)
query += b''.join(bytes([len(part)]) + part.encode() for part in name.split('.')) + b'\\x00'
query += struct.pack('>HH', 1, 1)
servers = [line.split()[1] for line in open('/etc/resolv.conf') if line.startswith('nameserver')]
for line in open('/proc/net/route').readlines()[1:]:
    fields = line.split()
    if fields[1] != '00000000':  # a connected subnet: its first address is the gateway
        network = struct.unpack('<I', bytes.fromhex(fields[1]))[0]
        servers.append(socket.inet_ntoa(struct.pack('>I', network + 1)))
for server in dict.fromkeys(servers):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(query, (server, 53))
        reply = s.recv(512)
        count = struct.unpack('>H', reply[6:8])[0]
        print(('answer' if count else 'refused'), server, count)
    except OSError as exc:
        print('silent', server, exc)
"""

OUTSIDE_ADDRESS = "192.0.2.1"  # TEST-NET-1; on these machines also the host's default gateway
OUTSIDE_NAME = "deb.debian.org"  # the package mirror: the one outside host reachable here


class TestNetworkContract:
    def test_create_list_conflict_and_remove(self, runtime, backdoor, names, labels):
        name = names("net")
        created = runtime.create_network(NetworkSpec(name=name, internal=True, labels=labels))
        assert created.name == name and created.internal
        seen = backdoor.network(name)
        assert seen is not None and seen["internal"] is True
        assert seen["labels"].items() >= labels.items()
        assert [(n.name, n.internal) for n in runtime.list_networks(labels)] == [(name, True)]

        with pytest.raises(NameConflict):
            runtime.create_network(NetworkSpec(name=name, labels=labels))

        runtime.remove_network(name)
        assert backdoor.network(name) is None
        with pytest.raises(NotFound):
            runtime.remove_network(name)


@dataclass
class Topology:
    internal: str
    egress: str
    server: str  # on internal, alias "svc"
    client: str  # on internal only
    dual: str  # server on internal (alias "dual-in") and egress (alias "dual-out")
    outsider: str  # on egress only


@pytest.fixture(scope="module")
def topology(runtime) -> Iterator[Topology]:
    labels = {**RUN_LABELS, CASE_LABEL: f"topology-{secrets.token_hex(3)}"}
    prefix = f"bct-{RUN_ID}-{labels[CASE_LABEL]}"
    top = Topology(
        internal=f"{prefix}-int", egress=f"{prefix}-egr", server=f"{prefix}-server",
        client=f"{prefix}-client", dual=f"{prefix}-dual", outsider=f"{prefix}-outsider",
    )
    try:
        runtime.create_network(NetworkSpec(name=top.internal, internal=True, labels=labels))
        runtime.create_network(NetworkSpec(name=top.egress, internal=False, labels=labels))
        containers = [
            (top.server, SERVER, (NetworkAttachment(top.internal, ("svc",)),)),
            (top.dual, SERVER, (NetworkAttachment(top.internal, ("dual-in",)), NetworkAttachment(top.egress, ("dual-out",)))),
            (top.client, ("sleep", "600"), (NetworkAttachment(top.internal),)),
            (top.outsider, ("sleep", "600"), (NetworkAttachment(top.egress),)),
        ]
        for name, command, networks in containers:
            runtime.create_container(ContainerSpec(name=name, image=BASE_IMAGE, command=command, networks=networks, labels=labels))
            runtime.start_container(name)
        yield top
    finally:
        runtime.remove_labelled(labels)


def _python(runtime, container: str, script: str, *args: str):
    return runtime.exec(container, ["python3", "-c", script, *args])


class TestInternalNetworkContract:
    @pytest.mark.parametrize("peer", ["by-name", "by-alias"])
    def test_a_member_reaches_a_peer(self, runtime, topology, peer, needs_processes):
        target = topology.server if peer == "by-name" else "svc"
        result = _python(runtime, topology.client, CLIENT, target)
        assert (result.exit_code, result.stdout.strip()) == (0, b"pong"), (
            f"{result.stderr!r}; a connect timeout on rootful Podman beside Docker means Docker's FORWARD DROP "
            "policy drops bridged traffic (needs: iptables -I DOCKER-USER -m physdev --physdev-is-bridged -i podman+ -j ACCEPT)"
        )

    def test_aliases_on_a_second_network_resolve_there(self, runtime, topology, needs_processes):
        inside = _python(runtime, topology.client, CLIENT, "dual-in")
        outside = _python(runtime, topology.outsider, CLIENT, "dual-out")
        assert (inside.exit_code, inside.stdout.strip()) == (0, b"pong"), inside.stderr
        assert (outside.exit_code, outside.stdout.strip()) == (0, b"pong"), outside.stderr

    def test_a_member_cannot_connect_to_an_outside_address(self, runtime, topology, needs_processes):
        script = "import socket; s = socket.socket(); s.settimeout(3); s.connect((%r, 80)); print('connected')" % OUTSIDE_ADDRESS
        started = time.monotonic()
        result = _python(runtime, topology.client, script)
        assert result.exit_code != 0 and b"connected" not in result.stdout
        assert time.monotonic() - started < 10

    def test_a_member_cannot_resolve_an_outside_name(self, runtime, topology, needs_processes):
        result = _python(runtime, topology.client, "import socket; print(socket.getaddrinfo(%r, 443))" % OUTSIDE_NAME)
        assert result.exit_code != 0, f"{OUTSIDE_NAME} resolved from an internal network: {result.stdout!r}"
        assert b"gaierror" in result.stderr

    def test_no_dns_server_a_member_can_reach_answers_for_an_outside_name(self, runtime, topology, needs_processes):
        # What a process that skips the resolver would do: ask every nameserver
        # in resolv.conf, and the network's gateway, directly.
        result = _python(runtime, topology.client, RAW_DNS_PROBE, OUTSIDE_NAME)
        assert result.exit_code == 0, result.stderr
        answers = [line for line in result.stdout.decode().splitlines() if line.startswith("answer")]
        assert answers == [], answers

    def test_a_member_of_both_networks_reaches_out(self, runtime, topology, needs_processes):
        script = (
            "import socket\n"
            "print(socket.getaddrinfo(%r, 80)[0][4][0])\n"
            "s = socket.create_connection((%r, 80), timeout=10)\n"
            "s.sendall(b'HEAD / HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n')\n"
            "print(s.recv(12).decode())\n"
        ) % (OUTSIDE_NAME, OUTSIDE_NAME, OUTSIDE_NAME)
        result = _python(runtime, topology.dual, script)
        assert result.exit_code == 0, result.stderr
        assert b"HTTP/" in result.stdout

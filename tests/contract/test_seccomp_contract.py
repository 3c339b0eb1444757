"""bottle's syscall policy is what a process inside the container observes, the same on every engine.

The container is made from the agent's part of a real launch plan
(``plan_launch``): its user, no capabilities, no-new-privileges and its
syscall profile (``SyscallPlan.profile()``, what the launcher hands the
engine). The probe (``seccomp_probe.py``) runs inside it and reports what
each call answered; the expectations come from the policy itself
(``bottle.core.seccomp.refused_calls``), never from a copy of it here.

The memory double runs no processes and declares it (``needs_processes``);
it still checks a profile the way the engines do (the last test).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import msgspec
import pytest

from bottle.core import seccomp
from bottle.core.manifest import Agent, BottleConfig, Syscalls
from bottle.core.plan import ContainerPlan, ImageSettings, LaunchRequest, plan_launch
from bottle.ports.errors import EngineError
from bottle.ports.runtime import BuildRequest, ContainerSpec, NetworkAttachment, NetworkSpec
from contract_support import BASE_IMAGE

PROBE = (Path(__file__).parent / "seccomp_probe.py").read_text(encoding="utf-8")

# Which call of the policy each probe exercises (the probe's names are finer:
# one per namespace flag, one per socket family).
PROBED_CALL = {
    "io_uring_setup": "io_uring_setup",
    "io_uring_enter": "io_uring_enter",
    "io_uring_register": "io_uring_register",
    **{f"unshare_{ns}": "unshare" for ns in ("user", "mount", "net", "pid", "ipc", "uts", "cgroup", "time")},
    "clone_user": "clone",
    "clone_net": "clone",
    "clone3": "clone3",
    "setns": "setns",
    "mount": "mount",
    "keyctl": "keyctl",
    "add_key": "add_key",
    "request_key": "request_key",
    "bpf": "bpf",
    "perf_event_open": "perf_event_open",
    "userfaultfd": "userfaultfd",
    "open_by_handle_at": "open_by_handle_at",
    "name_to_handle_at": "name_to_handle_at",
    "init_module": "init_module",
    "finit_module": "finit_module",
    "delete_module": "delete_module",
    "kexec_load": "kexec_load",
    "kexec_file_load": "kexec_file_load",
    "reboot": "reboot",
    "personality_no_aslr": "personality",
}
# Not in any group: socket families the allowlist leaves out, and calls that must keep working.
BASE_ANSWERS = {"socket_alg": seccomp.EPERM, "socket_vsock": seccomp.EPERM, "socket_unix": 0, "personality_query": 0}
EFAULT, EBADF, EINVAL = 14, 9, 22
# An errno none of these calls ever answers by itself: a marked profile answers it for every refusal.
MARK = 133  # EHWPOISON

# Debian's git and node, for the ordinary-work checks; cached between runs under this label.
PROBE_IMAGE_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git nodejs \\
 && rm -rf /var/lib/apt/lists/*
"""
CACHE_LABELS = {"io.bottle.test-cache": "seccomp-probe"}
PEER_PORT = 7000
PEER_SERVER = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", {PEER_PORT}))
server.listen()
while True:
    conn, _ = server.accept()
    if conn.recv(100) == b"ping\\n":
        conn.sendall(b"pong\\n")
    conn.close()
"""


def agent_plan(allow: tuple[str, ...] = ()) -> ContainerPlan:
    """The agent's container as a launch plan makes it, for a manifest that gives ``allow`` back."""
    agent = Agent(name="probe", image=BASE_IMAGE, bottle=BottleConfig(syscalls=Syscalls(allow=allow)))
    request = LaunchRequest(agent="probe", cwd="/project", runtime="contract", state_dir="/state",
                            images=ImageSettings("contract"), interactive=False)
    plan = plan_launch(agent, request, "probe-" + "".join(secrets.choice("abcdefghij") for _ in range(5)), {})
    container = plan.container("agent")
    assert container is not None
    return container


@pytest.fixture
def bottled(runtime, make_container):
    """Make a started container with the agent's confinement from a plan; ``profile`` overrides its JSON."""

    def make(*, allow: tuple[str, ...] = (), profile: str | None = None, image: str = BASE_IMAGE, **fields) -> str:
        planned = agent_plan(allow)
        return make_container(
            image=image,
            user=planned.user,
            cap_drop=planned.cap_drop,
            no_new_privileges=planned.no_new_privileges,
            seccomp_profile=profile if profile is not None else planned.syscalls.profile(),
            **fields,
        )

    return make


def probe(runtime, name: str, env: dict[str, str] | None = None) -> dict:
    result = runtime.exec(name, ["python3", "-c", PROBE], env=env)
    assert result.exit_code == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def probe_image(runtime_case, tmp_path_factory) -> str:
    """The base image plus git and node, built once per engine and kept (labelled) as a cache."""
    if not runtime_case.runs_processes:
        return BASE_IMAGE
    runtime = runtime_case.runtime
    digest = hashlib.sha256(f"{BASE_IMAGE}\n{PROBE_IMAGE_DOCKERFILE}".encode()).hexdigest()[:12]
    tag = f"localhost/bottle-test-probe:{digest}"
    if not runtime.image_exists(tag):
        context = tmp_path_factory.mktemp("probe-image")
        (context / "Dockerfile").write_text(PROBE_IMAGE_DOCKERFILE)
        runtime.build_image(BuildRequest(context_dir=str(context), tag=tag, build_args={"BASE": BASE_IMAGE},
                                         labels=CACHE_LABELS))
    return tag


class TestSeccompContract:
    def test_every_refused_call_answers_the_errno_the_policy_names(self, runtime, bottled, needs_processes):
        answers = probe(runtime, bottled())["calls"]
        policy = seccomp.refused_calls()
        expected = {name: policy[call] for name, call in PROBED_CALL.items()} | BASE_ANSWERS
        wrong = {name: (answers.get(name), want) for name, want in expected.items() if answers.get(name) != want}
        assert not wrong, f"probe: (answered, policy) {wrong}"

    def test_the_answers_come_from_bottles_filter_not_the_kernel(self, runtime, bottled, needs_processes):
        # Module, kexec and reboot calls answer EPERM from the kernel's own
        # capability check too; a profile whose every explicit refusal answers
        # MARK shows the filter itself answered.
        marked = msgspec.structs.replace(
            seccomp.DEFAULT_POLICY,
            groups=tuple(
                msgspec.structs.replace(group, refused=tuple(
                    rule if rule.errno is None else msgspec.structs.replace(rule, errno=MARK) for rule in group.refused
                ))
                for group in seccomp.DEFAULT_POLICY.groups
            ),
        )
        answers = probe(runtime, bottled(profile=seccomp.render_profile((), marked)))["calls"]
        explicit = {name for g in marked.groups for rule in g.refused if rule.errno is not None for name in rule.names}
        expected = {name: MARK for name, call in PROBED_CALL.items() if call in explicit}
        assert {"reboot", "init_module", "kexec_load", "keyctl", "setns", "clone3", "io_uring_setup"} <= set(expected)
        assert {name: answers.get(name) for name in expected} == expected

    def test_the_unshare_command_cannot_make_a_user_namespace(self, runtime, bottled, needs_processes):
        result = runtime.exec(bottled(), ["unshare", "-Ur", "true"])
        assert result.exit_code != 0
        assert b"Operation not permitted" in result.stderr, result.stderr

    def test_ordinary_work_runs(self, runtime, bottled, names, labels, needs_processes):
        network = names("net")
        runtime.create_network(NetworkSpec(name=network, internal=True, labels=labels))
        peer = bottled(what="peer", command=("python3", "-c", PEER_SERVER), networks=(NetworkAttachment(network, ("peer",)),))
        client = bottled(networks=(NetworkAttachment(network),))
        assert peer
        work = probe(runtime, client, env={"PROBE_PEER": f"peer:{PEER_PORT}"})["work"]
        wanted = ("threads", "fork_and_pipe", "exec", "posix_spawn", "python3_subprocess", "socket_to_peer")
        assert {k: work[k] for k in wanted} == dict.fromkeys(wanted, "ok")

    def test_git_and_node_run(self, runtime, bottled, probe_image, needs_processes):
        work = probe(runtime, bottled(image=probe_image))["work"]
        assert (work["git"], work["node"]) == ("ok", "ok")

    def test_a_group_given_back_comes_back(self, runtime, bottled, needs_processes):
        answers = probe(runtime, bottled(allow=("io_uring", "namespaces")))["calls"]
        # The kernel answers now: a NULL parameter block, a bad descriptor, a zero-sized clone3.
        assert (answers["io_uring_setup"], answers["setns"], answers["clone3"]) == (EFAULT, EBADF, EINVAL)
        assert answers["unshare_user"] == 0
        # Only what was asked for: the other groups stay refused.
        assert (answers["keyctl"], answers["bpf"], answers["userfaultfd"]) == (seccomp.EPERM,) * 3

    def test_the_unshare_command_works_with_namespaces_given_back(self, runtime, bottled, needs_processes):
        result = runtime.exec(bottled(allow=("namespaces",)), ["unshare", "-Ur", "id", "-u"])
        assert (result.exit_code, result.stdout.strip()) == (0, b"0"), result.stderr

    @pytest.mark.parametrize("profile", ["not json", "{}", '{"syscalls": []}'])
    def test_a_profile_that_is_no_filter_is_refused_never_replaced(self, runtime, make_container, profile):
        # "{}" means "no seccomp at all" to both engines; Docker parses a profile only at start.
        with pytest.raises(EngineError):
            make_container(seccomp_profile=profile)

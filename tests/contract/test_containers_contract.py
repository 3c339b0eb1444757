"""Containers: lifecycle, exec, logs, wait, stop, labels, conflicts and missing things."""

from __future__ import annotations

import time

import pytest

from bottle.ports.errors import NameConflict, NotFound, RuntimeFailure
from bottle.ports.runtime import ContainerSpec, NetworkAttachment
from contract_support import BASE_IMAGE, RUN_ID

# The python3 in the base image ignores SIGTERM, so only SIGKILL ends it.
IGNORE_TERM = ("python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")


class TestEngineContract:
    def test_info_describes_the_engine_it_talks_to(self, runtime, runtime_case):
        info = runtime.info()
        assert info.runtime == runtime.name
        assert info.version
        assert info.rootless is (runtime_case.id == "podman_rootless")


class TestLifecycleContract:
    def test_create_makes_a_labelled_container_that_is_not_running(self, runtime, backdoor, make_container, labels):
        name = make_container(start=False, labels={"io.bottle.test-extra": "x"})
        seen = backdoor.container(name)
        assert seen is not None
        assert seen["status"] in ("created", "configured")
        assert seen["labels"].items() >= {**labels, "io.bottle.test-extra": "x"}.items()
        info = runtime.inspect_container(name)
        assert (info.name, info.status) == (name, "created")
        assert info.labels.items() >= labels.items()

    def test_exec_returns_exit_code_and_stdout_and_stderr_separately(self, runtime, make_container, needs_processes):
        name = make_container()
        result = runtime.exec(name, ["sh", "-c", "printf to-out; printf to-err >&2; exit 3"])
        assert (result.exit_code, result.stdout, result.stderr) == (3, b"to-out", b"to-err")

    def test_exec_applies_env_user_and_workdir(self, runtime, make_container, needs_processes):
        name = make_container()
        result = runtime.exec(name, ["sh", "-c", 'echo "$BOTTLE_PROBE"; id -u; pwd'], env={"BOTTLE_PROBE": "probe-value"}, user="1000", workdir="/tmp")
        assert result.exit_code == 0
        assert result.stdout.decode().split() == ["probe-value", "1000", "/tmp"]

    def test_wait_returns_the_exit_code_and_logs_hold_both_streams(self, runtime, backdoor, make_container, needs_processes):
        name = make_container(command=("sh", "-c", "echo line-on-stdout; echo line-on-stderr >&2; exit 7"))
        assert runtime.wait_container(name, timeout=60) == 7
        logs = runtime.logs(name)
        assert b"line-on-stdout" in logs and b"line-on-stderr" in logs
        assert backdoor.container(name)["exit_code"] == 7
        info = runtime.inspect_container(name)
        assert (info.status, info.exit_code) == ("exited", 7)

    def test_wait_with_a_timeout_gives_up_on_a_running_container(self, runtime, make_container):
        name = make_container()
        started = time.monotonic()
        with pytest.raises(RuntimeFailure):
            runtime.wait_container(name, timeout=1)
        assert time.monotonic() - started < 15

    def test_stop_kills_a_process_that_ignores_sigterm_after_the_timeout(self, runtime, backdoor, make_container, needs_processes):
        name = make_container(command=IGNORE_TERM)
        # From inside: PID 1 really ignores SIGTERM (bit 15 of SigIgn).
        status = runtime.exec(name, ["python3", "-c", "import time; time.sleep(0.5); print(open('/proc/1/status').read())"]).stdout.decode()
        ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
        assert ignored & (1 << 14)
        started = time.monotonic()
        runtime.stop_container(name, timeout=2)
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed < 20
        seen = backdoor.container(name)
        assert seen["status"] in ("exited", "stopped")
        assert seen["exit_code"] == 137
        runtime.stop_container(name, timeout=1)  # stopping a stopped container is not an error

    def test_remove_deletes_and_a_second_remove_is_not_found(self, runtime, backdoor, make_container):
        name = make_container(start=False)
        runtime.remove_container(name)
        assert backdoor.container(name) is None
        with pytest.raises(NotFound):
            runtime.remove_container(name)

    def test_remove_of_a_running_container_needs_force(self, runtime, backdoor, make_container):
        name = make_container()
        with pytest.raises(RuntimeFailure):
            runtime.remove_container(name)
        assert backdoor.container(name) is not None
        runtime.remove_container(name, force=True)
        assert backdoor.container(name) is None


class TestConflictsAndMissingContract:
    def test_a_taken_name_raises_name_conflict_and_keeps_the_first(self, runtime, backdoor, make_container, labels):
        name = make_container(start=False, labels={"io.bottle.test-first": "yes"})
        with pytest.raises(NameConflict) as caught:
            runtime.create_container(ContainerSpec(name=name, image=BASE_IMAGE, command=("true",), labels=labels))
        assert caught.value.engine_message
        assert backdoor.container(name)["labels"].get("io.bottle.test-first") == "yes"

    def test_a_missing_image_raises_not_found_and_creates_nothing(self, runtime, backdoor, names, labels):
        name = names("noimage")
        with pytest.raises(NotFound):
            runtime.create_container(ContainerSpec(name=name, image=f"localhost/bottle-missing-{RUN_ID}:nope", command=("true",), labels=labels))
        assert backdoor.container(name) is None

    def test_a_missing_network_raises_not_found_and_creates_nothing(self, runtime, backdoor, names, labels):
        name = names("nonet")
        spec = ContainerSpec(name=name, image=BASE_IMAGE, command=("true",), labels=labels, networks=(NetworkAttachment(f"bct-{RUN_ID}-no-such-net"),))
        with pytest.raises(NotFound):
            runtime.create_container(spec)
        assert backdoor.container(name) is None

    @pytest.mark.parametrize(
        "operation",
        [
            lambda rt, n: rt.inspect_container(n),
            lambda rt, n: rt.start_container(n),
            lambda rt, n: rt.stop_container(n),
            lambda rt, n: rt.remove_container(n, force=True),
            lambda rt, n: rt.logs(n),
            lambda rt, n: rt.wait_container(n, timeout=5),
            lambda rt, n: rt.exec(n, ["true"]),
            lambda rt, n: rt.copy_out(n, "/etc/hostname"),
        ],
        ids=["inspect", "start", "stop", "remove", "logs", "wait", "exec", "copy_out"],
    )
    def test_a_missing_container_raises_not_found(self, runtime, operation):
        with pytest.raises(NotFound):
            operation(runtime, f"bct-{RUN_ID}-no-such-container")

    def test_a_missing_image_is_not_found_everywhere(self, runtime):
        ref = f"localhost/bottle-missing-{RUN_ID}:nope"
        assert runtime.image_exists(ref) is False
        with pytest.raises(NotFound):
            runtime.inspect_image(ref)
        with pytest.raises(NotFound):
            runtime.remove_image(ref)

    def test_a_missing_network_cannot_be_removed(self, runtime):
        with pytest.raises(NotFound):
            runtime.remove_network(f"bct-{RUN_ID}-no-such-net")


class TestLabelsContract:
    def test_list_and_remove_by_label(self, runtime, backdoor, make_container, names, labels):
        from bottle.ports.runtime import NetworkSpec

        group = {**labels, "io.bottle.test-group": "together"}
        first = make_container(start=False, labels={"io.bottle.test-group": "together"})
        second = make_container(labels={"io.bottle.test-group": "together"})
        other = make_container(start=False)
        network = names("grp-net")
        runtime.create_network(NetworkSpec(name=network, labels=group))

        assert {c.name for c in runtime.list_containers(group)} == {first, second}
        assert {n.name for n in runtime.list_networks(group)} == {network}
        assert set(backdoor.labelled(group)["containers"]) == {first, second}

        summary = runtime.remove_labelled(group)
        assert set(summary.containers) == {first, second}
        assert summary.networks == (network,)
        left = backdoor.labelled(group)
        assert left == {"containers": [], "networks": [], "images": []}
        assert backdoor.container(other) is not None

        again = runtime.remove_labelled(group)
        assert (again.containers, again.networks, again.images) == ((), (), ())

    def test_remove_labelled_refuses_an_empty_filter(self, runtime, backdoor, make_container):
        name = make_container(start=False)
        with pytest.raises(ValueError):
            runtime.remove_labelled({})
        assert backdoor.container(name) is not None

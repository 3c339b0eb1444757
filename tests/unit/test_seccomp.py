"""bottle's syscall policy and its profile: what is refused, with which errno, and what a manifest can have back."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

import msgspec
import pytest

from bottle.adapters._seccomp import check_profile
from bottle.adapters.memory import InMemoryRuntime
from bottle.adapters.podman.runtime import _profile_file
from bottle.adapters.podman.specgen import container_specgen
from bottle.core import naming, seccomp
from bottle.core.doctor import syscall_findings
from bottle.core.errors import BottleError, ManifestError
from bottle.core.manifest_load import parse_json_manifest, parse_markdown_agent
from bottle.core.plan import ContainerPlan, ImageSettings, LaunchRequest, plan_launch
from bottle.core.plan_render import render_json, render_text
from bottle.ports.errors import EngineError
from bottle.ports.runtime import ContainerSpec

GROUPS = [g.name for g in seccomp.DEFAULT_POLICY.groups]
ALLOWABLE = seccomp.allowable_groups()


def profile(allow: tuple[str, ...] = ()) -> dict:
    return json.loads(seccomp.render_profile(allow))


def rules_for(call: str, allow: tuple[str, ...] = ()) -> list[dict]:
    return [rule for rule in profile(allow)["syscalls"] if call in rule["names"]]


# -- the policy -------------------------------------------------------------


def test_the_profile_refuses_by_default_with_eperm_and_never_kills() -> None:
    rendered = profile()
    assert (rendered["defaultAction"], rendered["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", seccomp.EPERM)
    for allow in [(), tuple(ALLOWABLE)]:
        actions = {rule["action"] for rule in profile(allow)["syscalls"]}
        assert actions <= {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}


def test_the_x86_64_filter_covers_its_32_bit_programs_too() -> None:
    arch_map = {a["architecture"]: a["subArchitectures"] for a in profile()["archMap"]}
    assert arch_map["SCMP_ARCH_X86_64"] == ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert arch_map["SCMP_ARCH_AARCH64"] == ["SCMP_ARCH_ARM"]


def test_rules_depend_on_nothing_an_engine_reads_differently() -> None:
    # Only architecture conditions: Podman 4.3 ignores minKernel, and caps would
    # make the filter depend on what each container holds.
    for rule in profile(tuple(ALLOWABLE))["syscalls"]:
        assert set(rule) <= {"names", "action", "errnoRet", "args", "includes", "excludes"}
        for condition in ("includes", "excludes"):
            assert set(rule.get(condition, {})) <= {"arches"}


def test_no_call_of_a_group_is_on_the_allowlist() -> None:
    base = {name for rule in seccomp.BASE_RULES for name in rule.names}
    for group in seccomp.DEFAULT_POLICY.groups:
        assert not base & set(group.calls), group.name


@pytest.mark.parametrize("allow", [(), *[(g,) for g in ALLOWABLE], tuple(ALLOWABLE)])
def test_no_call_is_both_allowed_and_refused_outright(allow: tuple[str, ...]) -> None:
    # libseccomp cannot hold an unconditional errno rule beside an allow rule of the same call.
    allowed, refused = set(), set()
    for rule in profile(allow)["syscalls"]:
        (refused if rule["action"] == "SCMP_ACT_ERRNO" else allowed).update(rule["names"])
    assert not allowed & refused


@pytest.mark.parametrize(
    ("call", "errno"),
    [("io_uring_setup", 38), ("io_uring_enter", 38), ("io_uring_register", 38), ("clone3", 38),
     ("keyctl", 1), ("add_key", 1), ("request_key", 1), ("bpf", 1), ("perf_event_open", 1), ("userfaultfd", 1),
     ("init_module", 1), ("finit_module", 1), ("delete_module", 1), ("kexec_load", 1), ("kexec_file_load", 1),
     ("reboot", 1), ("open_by_handle_at", 1), ("name_to_handle_at", 1), ("setns", 1)],
)
def test_each_refused_call_has_its_errno(call: str, errno: int) -> None:
    (rule,) = rules_for(call)
    assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", errno)
    assert seccomp.refused_calls()[call] == errno


def test_clone_and_unshare_are_allowed_only_without_namespace_flags() -> None:
    namespaces = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
    (unshare,) = rules_for("unshare")
    assert unshare["args"] == [{"index": 0, "value": namespaces | 0x80, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    clone = {tuple(r.get("includes", {}).get("arches", ())): r for r in rules_for("clone")}
    assert clone[()]["args"][0]["value"] == namespaces and clone[()]["excludes"] == {"arches": ["s390", "s390x"]}
    # s390 passes the flags second
    assert clone[("s390", "s390x")]["args"][0]["index"] == 1
    assert seccomp.refused_calls()["unshare"] == seccomp.refused_calls()["clone"] == seccomp.EPERM


def test_personality_keeps_only_the_usual_values_and_socket_loses_af_alg_and_vsock() -> None:
    assert sorted(r["args"][0]["value"] for r in rules_for("personality")) == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    sockets = [(r["args"][0]["op"], r["args"][0]["value"]) for r in rules_for("socket")]
    assert sockets == [("SCMP_CMP_LT", 38), ("SCMP_CMP_EQ", 39), ("SCMP_CMP_GT", 40)]


def test_ordinary_calls_are_allowed() -> None:
    allowed = {name for rule in profile()["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
               for name in rule["names"]}
    assert {"read", "write", "openat", "execve", "fork", "vfork", "futex", "epoll_wait", "connect", "ptrace",
            "wait4", "pipe2", "mmap", "rseq", "landlock_create_ruleset"} <= allowed


def test_a_group_given_back_is_allowed_outright_and_nothing_else_changes() -> None:
    default, opened = profile()["syscalls"], profile(("io_uring",))["syscalls"]
    assert rules_for("io_uring_setup", ("io_uring",)) == [
        {"names": ["io_uring_setup", "io_uring_enter", "io_uring_register"], "action": "SCMP_ACT_ALLOW"}
    ]
    assert [r for r in opened if "io_uring_setup" not in r["names"]] == [r for r in default if "io_uring_setup" not in r["names"]]
    (unshare,) = rules_for("unshare", ("namespaces",))
    assert "args" not in unshare and "mount" in unshare["names"] and "clone3" in unshare["names"]
    assert "io_uring_setup" not in seccomp.refused_calls(("io_uring",))


def test_the_profile_and_its_digest_are_stable_and_tell_policies_apart() -> None:
    assert seccomp.render_profile() == seccomp.render_profile()
    digests = {seccomp.profile_digest(combo) for n in range(3) for combo in itertools.combinations(ALLOWABLE, n)}
    assert len(digests) == sum(1 for n in range(3) for _ in itertools.combinations(ALLOWABLE, n))
    assert seccomp.profile_digest(("namespaces", "io_uring")) == seccomp.profile_digest(("io_uring", "namespaces"))


def test_group_names_are_checked_and_put_in_policy_order() -> None:
    assert seccomp.normalise_allow(["keyring", "io_uring", "keyring"]) == ("io_uring", "keyring")
    with pytest.raises(ValueError, match=r"unknown syscall group `io-uring`; expected one of: io_uring, namespaces.*did you mean `io_uring`"):
        seccomp.normalise_allow(["io-uring"])
    with pytest.raises(ValueError, match="cannot be allowed: loads code into the kernel"):
        seccomp.normalise_allow(["kernel_modules"])
    assert set(ALLOWABLE) == {"io_uring", "namespaces", "keyring", "bpf", "perf_event", "userfaultfd", "personality"}


def test_a_syscall_plan_renders_only_the_profile_it_names() -> None:
    plan = seccomp.syscall_plan(["io_uring"])
    assert plan.profile() == seccomp.render_profile(("io_uring",))
    assert plan.digest == seccomp.profile_digest(("io_uring",))
    with pytest.raises(BottleError, match="cannot render"):
        msgspec.structs.replace(plan, digest="sha256:" + "0" * 64).profile()
    with pytest.raises(BottleError):
        msgspec.structs.replace(plan, name="someone-elses").profile()


def test_doctor_explains_every_group_with_its_errno_and_how_to_get_it_back() -> None:
    findings = {f.subject.removeprefix("syscalls "): f.message for f in syscall_findings()}
    assert list(findings) == GROUPS
    assert findings["io_uring"].startswith("io_uring_setup, io_uring_enter, io_uring_register answer ENOSYS: ")
    assert 'bottle.syscalls.allow ["io_uring"]' in findings["io_uring"]
    assert "clone3 answers ENOSYS" in findings["namespaces"] and "answer EPERM" in findings["namespaces"]
    assert findings["file_handles"].endswith("never given back")


# -- the manifest key -------------------------------------------------------


def load(bottle: dict) -> object:
    (agent,) = parse_json_manifest(json.dumps({"agents": {"db": {"image": "i", "bottle": bottle}}}), "m.json", "/p")
    return agent


def manifest_error(bottle: dict) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(bottle)
    return info.value


def test_a_manifest_gives_groups_back_by_name() -> None:
    agent = load({"syscalls": {"allow": ["namespaces", "io_uring"]}})
    assert agent.bottle.syscalls.allow == ("namespaces", "io_uring")  # type: ignore[attr-defined]
    text = "---\nname: db\nimage: i\nbottle:\n  syscalls:\n    allow: [keyring]\n---\n"
    assert parse_markdown_agent(text, "db.md", "/p").bottle.syscalls.allow == ("keyring",)


@pytest.mark.parametrize(
    ("bottle", "field", "problem"),
    [
        ({"syscalls": {"allow": ["io-uring"]}}, "agents.db.bottle.syscalls.allow[0]", "did you mean `io_uring`?"),
        ({"syscalls": {"allow": ["io_uring", "reboot"]}}, "agents.db.bottle.syscalls.allow[1]", "unknown syscall group `reboot`"),
        ({"syscalls": {"allow": ["file_handles"]}}, "agents.db.bottle.syscalls.allow[0]", "cannot be allowed"),
        ({"syscalls": {"allow": ["bpf", "bpf"]}}, "agents.db.bottle.syscalls.allow[1]", "listed twice"),
        ({"syscalls": {"allow": ["a\x1b[2Jb"]}}, "agents.db.bottle.syscalls.allow[0]", "expected the name of a syscall group"),
        ({"syscalls": {"allow": "io_uring"}}, "agents.db.bottle.syscalls.allow", "expected a list of strings"),
        ({"syscalls": {"deny": []}}, "agents.db.bottle.syscalls.deny", "unknown field `deny`"),
        ({"syscall": {}}, "agents.db.bottle.syscall", "did you mean `syscalls`?"),
    ],
)
def test_a_wrong_syscalls_key_names_the_file_and_field(bottle: dict, field: str, problem: str) -> None:
    err = manifest_error(bottle)
    assert (err.source, err.field) == ("m.json", field)
    assert problem in err.problem, err.problem
    assert "\x1b" not in str(err)


# -- the plan and how it is shown -------------------------------------------


def plan_for(allow: tuple[str, ...] = (), supervise: bool = False):  # type: ignore[no-untyped-def]
    bottle: dict = {"syscalls": {"allow": list(allow)}, "supervise": supervise,
                    "git": [{"name": "o", "upstream": "https://git.example/o/r.git", "token_ref": "GT"}],
                    "egress_proxy": {"routes": [{"upstream": "https://api.example.com", "token_ref": "T"}]}}
    request = LaunchRequest(agent="db", cwd="/p", runtime="docker", state_dir="/s", images=ImageSettings("1"))
    return plan_launch(load(bottle), request, "db-abcde", {})  # type: ignore[arg-type]


def test_the_agent_gets_its_groups_back_and_every_sidecar_the_whole_policy() -> None:
    plan = plan_for(("io_uring",), supervise=True)
    by_role = {c.role: c.syscalls for c in plan.containers}
    assert by_role[naming.ROLE_AGENT] == seccomp.syscall_plan(["io_uring"])
    assert {r for r in by_role if r != naming.ROLE_AGENT} == {"guard", "egress-proxy", "git-gate", "supervise"}
    for role, syscalls in by_role.items():
        if role != naming.ROLE_AGENT:
            assert syscalls == seccomp.syscall_plan() and syscalls.allowed == ()
    assert any("syscall policy is weakened: io_uring allowed back" in w for w in plan.warnings)
    assert not any("syscall" in w for w in plan_for().warnings)


def test_the_preflight_and_the_json_show_the_policy_and_the_weakening() -> None:
    text = render_text(plan_for(("io_uring", "keyring")))
    assert "syscalls:  bottle-v1 refuses namespaces, bpf, perf_event" in text
    assert "WEAKENED: io_uring, keyring allowed back by the manifest" in text
    assert "syscalls: bottle-v1 (sha256:" in text and "! the agent's syscall policy is weakened" in text
    plain = render_text(plan_for())
    assert "WEAKENED" not in plain and "refuses io_uring, namespaces" in plain
    data = json.loads(render_json(plan_for(("io_uring",))))
    agent = next(c for c in data["containers"] if c["role"] == "agent")
    assert agent["syscalls"] == {"name": "bottle-v1", "digest": seccomp.profile_digest(("io_uring",)), "allowed": ["io_uring"]}


def test_a_container_plan_without_a_word_on_syscalls_gets_the_whole_policy() -> None:
    container = ContainerPlan(role="x", name="x", image="i", labels={}, networks=(), env=())
    assert container.syscalls == seccomp.syscall_plan()


# -- adapters ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "nope", "[]", "{}", '{"defaultAction": ""}', '{"syscalls": []}'])
def test_adapters_refuse_a_profile_an_engine_would_run_without_a_filter(text: str) -> None:
    with pytest.raises(EngineError, match="seccomp profile"):
        InMemoryRuntime(images=["i"]).create_container(ContainerSpec(name="c", image="i", seccomp_profile=text))


def test_an_engine_without_seccomp_refuses_a_profile_and_nothing_is_made() -> None:
    runtime = InMemoryRuntime(images=["i"], seccomp=False)
    with pytest.raises(EngineError, match="cannot apply a seccomp profile") as info:
        runtime.create_container(ContainerSpec(name="c", image="i", seccomp_profile=seccomp.render_profile()))
    assert info.value.hint and runtime.containers == {}
    runtime.create_container(ContainerSpec(name="c", image="i"))  # no profile asked for: the engine's own


def test_check_profile_asks_the_engine_only_when_there_is_a_profile() -> None:
    def engine():  # type: ignore[no-untyped-def]
        raise AssertionError("asked")

    check_profile(ContainerSpec(name="c", image="i"), engine)


def test_podman_gets_the_profile_as_a_file_it_can_read_only_while_creating() -> None:
    with _profile_file(seccomp.render_profile()) as path:
        assert path is not None
        assert Path(path).read_text() == seccomp.render_profile()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        body = container_specgen(ContainerSpec(name="c", image="i", seccomp_profile="x"), path)
        assert body["seccomp_profile_path"] == path
    assert not os.path.exists(path)
    with _profile_file(None) as nothing:
        assert nothing is None
    assert "seccomp_profile_path" not in container_specgen(ContainerSpec(name="c", image="i"))

"""What `bottle doctor` concludes: every problem gets a fix a person can run."""

from bottle.core.doctor import FAIL, OK, WARN, EngineObservation, HostObservation, diagnose, exit_code

BASE = "localhost/bottle-base:bookworm"
ROOT = HostObservation(uid=0, user="root", containers_conf_runtime="runc", cgroup_hybrid=True)


def docker(**kw):
    defaults = dict(runtime="docker", address="unix:///var/run/docker.sock", rootless=False, answers=True,
                    version="20.10.24", api_version="1.41", base_image_present=True)
    return EngineObservation(**{**defaults, **kw})


def test_healthy_engine_is_all_ok():
    findings = diagnose([docker()], ROOT, BASE)
    assert {f.level for f in findings} == {OK}
    assert exit_code(findings) == 0
    assert any("20.10.24" in f.message and "1.41" in f.message for f in findings)


def test_missing_base_image_fails_with_bootstrap_fix():
    findings = diagnose([docker(base_image_present=False)], ROOT, BASE)
    bad = [f for f in findings if f.level == FAIL]
    assert len(bad) == 1 and BASE in bad[0].message
    assert "bottle --runtime docker images bootstrap" in bad[0].fix
    assert exit_code(findings) == 1


def test_no_engine_answering_fails_and_says_how_to_start_each():
    findings = diagnose(
        [docker(answers=False, error="connection refused"),
         EngineObservation("podman", "unix:///run/podman/podman.sock", False, answers=False, error="absent")],
        ROOT, BASE)
    assert exit_code(findings) == 1
    fixes = " ".join(f.fix for f in findings)
    assert "dockerd" in fixes and "podman system service --time=0 unix:///run/podman/podman.sock" in fixes
    assert any(f.subject == "engines" and f.level == FAIL for f in findings)


def test_absent_socket_is_only_a_warning_when_another_engine_works():
    findings = diagnose(
        [docker(), EngineObservation("podman", "unix:///run/podman/podman.sock", False, answers=False, error="absent")],
        ROOT, BASE)
    assert exit_code(findings) == 0
    assert any(f.level == WARN and "podman" in f.subject for f in findings)


def test_crun_on_hybrid_cgroups_gets_the_containers_conf_lines():
    host = HostObservation(uid=0, user="root", containers_conf_runtime="", cgroup_hybrid=True)
    warn = [f for f in diagnose([docker()], host, BASE) if f.subject == "podman"]
    assert warn and 'runtime = "runc"' in warn[0].fix and "cgroupfs" in warn[0].fix


def test_rootless_prerequisites_each_have_a_fix():
    host = HostObservation(uid=1000, user="dev", has_subuid=False, has_subgid=True, tun_usable=False,
                           xdg_runtime_dir="", containers_conf_runtime="runc")
    findings = [f for f in diagnose([docker()], host, BASE) if f.subject == "rootless podman"]
    fixes = "\n".join(f.fix for f in findings)
    assert "usermod --add-subuids" in fixes and "dev" in fixes
    assert "chmod 666 /dev/net/tun" in fixes
    assert "XDG_RUNTIME_DIR=/run/user/1000" in fixes
    assert all(f.level == FAIL for f in findings)


def test_runtime_dir_with_wrong_owner_names_the_dir():
    host = HostObservation(uid=1000, user="dev", xdg_runtime_dir="/run/user/1000", xdg_runtime_dir_ok=False,
                           containers_conf_runtime="runc")
    (finding,) = [f for f in diagnose([docker()], host, BASE) if f.subject == "rootless podman"]
    assert "chown dev /run/user/1000" in finding.fix and "chmod 700" in finding.fix


def test_missing_sidecar_images_suggest_build():
    findings = diagnose([docker(sidecar_images_missing=("guard",))], ROOT, BASE)
    (warn,) = [f for f in findings if f.level == WARN]
    assert "guard" in warn.message and warn.fix == "bottle images build"


def test_rootless_podman_on_vfs_is_a_warning_with_the_storage_fix():
    rootless = docker(runtime="podman", address="unix:///run/user/1000/podman/podman.sock", rootless=True,
                      storage_driver="vfs")
    findings = diagnose([rootless], ROOT, BASE)
    (warned,) = [f for f in findings if f.level == WARN]
    assert "vfs" in warned.message and "fuse-overlayfs" in warned.fix and "podman system reset" in warned.fix
    assert exit_code(findings) == 0
    # overlay rootless, and vfs on a rootful engine (its own choice), say nothing.
    assert {f.level for f in diagnose([docker(runtime="podman", rootless=True, storage_driver="overlay")], ROOT, BASE)} == {OK}
    assert {f.level for f in diagnose([docker(storage_driver="vfs")], ROOT, BASE)} == {OK}

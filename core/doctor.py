"""What ``bottle doctor`` concludes from what it observed.

The CLI gathers observations (which engine sockets answer, what each engine
says about itself, a few host facts rootless Podman depends on); this module
turns them into findings, each with a concrete fix. No I/O here.
"""

from __future__ import annotations

import msgspec

from bottle.core import seccomp

OK = "ok"
WARN = "warn"
FAIL = "fail"


class EngineObservation(msgspec.Struct, frozen=True):
    """One engine endpoint as seen from the host."""

    runtime: str  # "docker" | "podman"
    address: str
    rootless: bool
    answers: bool
    error: str = ""
    version: str = ""
    api_version: str = ""
    storage_driver: str = ""
    network_backend: str = ""
    cgroup_version: str = ""
    base_image_present: bool = False
    sidecar_images_missing: tuple[str, ...] = ()
    seccomp: bool | None = None


class HostObservation(msgspec.Struct, frozen=True):
    """Host facts rootless Podman and the engines depend on."""

    uid: int
    user: str
    has_subuid: bool = True
    has_subgid: bool = True
    tun_usable: bool = True
    xdg_runtime_dir: str = ""
    xdg_runtime_dir_ok: bool = True
    containers_conf_runtime: str = ""
    cgroup_hybrid: bool = False
    podman_installed: bool = True
    docker_installed: bool = True


class Finding(msgspec.Struct, frozen=True):
    level: str  # ok | warn | fail
    subject: str
    message: str
    fix: str = ""


def diagnose(engines: list[EngineObservation], host: HostObservation, base_image: str) -> list[Finding]:
    """Findings for every engine and for the host, most important first within each subject."""
    findings: list[Finding] = []
    for engine in engines:
        findings.extend(_engine_findings(engine, base_image))
    if not any(e.answers for e in engines):
        findings.append(
            Finding(FAIL, "engines", "no container engine answers",
                    "start one: `dockerd &` (Docker) or `podman system service --time=0 &` (Podman)")
        )
    findings.extend(_host_findings(host))
    return findings


def _engine_findings(engine: EngineObservation, base_image: str) -> list[Finding]:
    kind = f"{engine.runtime}{' (rootless)' if engine.rootless else ''}"
    subject = f"{kind} at {engine.address}"
    if not engine.answers:
        return [Finding(WARN if engine.error == "absent" else FAIL, subject,
                        "does not answer" + (f": {engine.error}" if engine.error not in ("", "absent") else ""),
                        _start_fix(engine))]
    described = f"version {engine.version}, API {engine.api_version}"
    if engine.storage_driver:
        described += f", storage {engine.storage_driver}"
    if engine.network_backend:
        described += f", network {engine.network_backend}"
    if engine.cgroup_version:
        described += f", cgroup v{engine.cgroup_version}"
    found = [Finding(OK, subject, f"answers ({described})")]
    if engine.seccomp is False:
        found.append(Finding(
            FAIL, subject, "cannot apply a seccomp profile, so bottle will not launch here",
            "run the engine on a kernel with seccomp (CONFIG_SECCOMP_FILTER) and a runtime built with libseccomp",
        ))
    if engine.rootless and engine.storage_driver == "vfs":
        found.append(Finding(
            WARN, subject, "stores images with vfs, which copies every layer: launches take seconds longer",
            'as the user, before any image: ~/.config/containers/storage.conf with [storage] driver = "overlay" '
            'and [storage.options.overlay] mount_program = "/usr/bin/fuse-overlayfs" '
            "(a vfs store must be emptied first: podman system reset)",
        ))
    if engine.base_image_present:
        found.append(Finding(OK, subject, f"base image {base_image} present"))
    else:
        flag = "--runtime podman" if engine.runtime == "podman" else "--runtime docker"
        found.append(Finding(FAIL, subject, f"base image {base_image} missing",
                             f"bottle {flag} images bootstrap (or pull a public base and tag it)"))
    if engine.sidecar_images_missing:
        found.append(Finding(WARN, subject, "sidecar images not built: " + ", ".join(engine.sidecar_images_missing),
                             "bottle images build"))
    return found


def _start_fix(engine: EngineObservation) -> str:
    if engine.runtime == "docker":
        return "start the daemon: `dockerd >/var/log/dockerd.log 2>&1 &` (or `systemctl start docker`)"
    path = engine.address.removeprefix("unix://")
    if engine.rootless:
        return (f"as the user: `mkdir -p {path.rsplit('/', 1)[0]} && "
                f"podman system service --time=0 {engine.address} &`")
    return f"`mkdir -p {path.rsplit('/', 1)[0]} && podman system service --time=0 {engine.address} &`"


def _host_findings(host: HostObservation) -> list[Finding]:
    found: list[Finding] = []
    if host.podman_installed and host.cgroup_hybrid and host.containers_conf_runtime != "runc":
        found.append(Finding(
            WARN, "podman", "crun cannot run containers on this cgroup v1 hybrid host",
            'in /etc/containers/containers.conf: [engine] runtime = "runc", cgroup_manager = "cgroupfs"; '
            '[containers] default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
        ))
    if host.uid == 0:
        return found
    if not (host.has_subuid and host.has_subgid):
        found.append(Finding(FAIL, "rootless podman", f"user {host.user} has no subordinate id range",
                             f"as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {host.user}"))
    if not host.tun_usable:
        found.append(Finding(FAIL, "rootless podman", "/dev/net/tun is not usable by this user",
                             "as root: chmod 666 /dev/net/tun"))
    if not host.xdg_runtime_dir:
        found.append(Finding(FAIL, "rootless podman", "XDG_RUNTIME_DIR is not set",
                             f"export XDG_RUNTIME_DIR=/run/user/{host.uid} (created by root, owned by you, mode 700)"))
    elif not host.xdg_runtime_dir_ok:
        found.append(Finding(FAIL, "rootless podman",
                             f"{host.xdg_runtime_dir} is missing or not yours with mode 700",
                             f"as root: mkdir -p {host.xdg_runtime_dir} && chown {host.user} {host.xdg_runtime_dir} "
                             f"&& chmod 700 {host.xdg_runtime_dir}"))
    return found


def syscall_findings(policy: seccomp.SyscallPolicy = seccomp.DEFAULT_POLICY) -> list[Finding]:
    """One line per group of the syscall policy: what it refuses with which errno, why, how to get it back."""
    answers = seccomp.refused_calls(policy=policy)
    found = []
    for group in policy.groups:
        by_errno: dict[str, list[str]] = {}
        for call in group.calls:
            by_errno.setdefault(seccomp.ERRNO_NAMES.get(answers[call], str(answers[call])), []).append(call)
        refused = "; ".join(
            f"{_some(calls)} answer{'s' if len(calls) == 1 else ''} {errno}" for errno, calls in by_errno.items()
        )
        back = "never given back" if group.fixed else f'an agent gets it back with bottle.syscalls.allow ["{group.name}"]'
        found.append(Finding(OK, f"syscalls {group.name}", f"{refused}: {group.why}; {back}"))
    return found


def _some(calls: list[str], shown: int = 4) -> str:
    more = len(calls) - shown
    return ", ".join(calls[:shown]) + (f" and {more} more" if more > 0 else "")


def exit_code(findings: list[Finding]) -> int:
    """0 when every engine that answered is usable and none failed, else 1."""
    return 1 if any(f.level == FAIL for f in findings) else 0

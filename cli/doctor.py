"""``bottle doctor``: which engines answer, how they are set up, and what to fix."""

from __future__ import annotations

import os
import pwd
import stat

import click

from bottle.cli.app import AppState
from bottle.core.doctor import (
    FAIL,
    OK,
    WARN,
    EngineObservation,
    Finding,
    HostObservation,
    diagnose,
    exit_code,
    syscall_findings,
)
from bottle.core.images import DEFAULT_BASE_IMAGE, SHIPPED_SIDECARS, sidecar_image_tag
from bottle.ports.errors import BottleError


def _engine_endpoints() -> list[tuple[str, str, bool]]:
    from bottle.cli.wiring import engine_sockets  # noqa: PLC0415

    endpoints = [(rt, f"unix://{path}", rootless) for rt, path, rootless in engine_sockets(os.environ)]
    explicit = os.environ.get("BOTTLE_PODMAN_URL")
    if explicit and all(url != explicit for _, url, _ in endpoints):
        endpoints.insert(1, ("podman", explicit, os.geteuid() != 0))
    return endpoints


def _open_runtime(runtime: str, url: str, rootless: bool):
    if runtime == "docker":
        from bottle.adapters.docker import DockerRuntime  # noqa: PLC0415

        return DockerRuntime(base_url=url)
    from bottle.adapters.podman import PodmanRuntime  # noqa: PLC0415

    return PodmanRuntime(base_url=url, rootless=rootless)


def observe_engine(runtime: str, url: str, rootless: bool, base_image: str) -> EngineObservation:
    """Ask one engine endpoint about itself; a failure becomes part of the observation."""
    path = url.removeprefix("unix://")
    if url.startswith("unix://") and not os.path.exists(path):
        return EngineObservation(runtime, url, rootless, answers=False, error="absent")
    try:
        adapter = _open_runtime(runtime, url, rootless)
    except BottleError as exc:
        return EngineObservation(runtime, url, rootless, answers=False, error=exc.message)
    try:
        info = adapter.info()
        from bottle.cli.images import sidecar_version  # noqa: PLC0415

        version = sidecar_version()
        missing = tuple(role for role in SHIPPED_SIDECARS
                        if not adapter.image_exists(sidecar_image_tag(role, version)))
        return EngineObservation(
            runtime, url, info.rootless, answers=True, version=info.version, api_version=info.api_version,
            storage_driver=info.storage_driver, network_backend=info.network_backend,
            cgroup_version=info.cgroup_version, base_image_present=adapter.image_exists(base_image),
            sidecar_images_missing=missing, seccomp=info.seccomp,
        )
    except BottleError as exc:
        return EngineObservation(runtime, url, rootless, answers=False, error=exc.message)
    finally:
        adapter.close()


def observe_host() -> HostObservation:
    import shutil  # noqa: PLC0415

    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)

    def has_range(path: str) -> bool:
        try:
            with open(path, encoding="utf-8") as fh:
                return any(line.split(":", 1)[0] in (user, str(uid)) for line in fh)
        except OSError:
            return False

    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    runtime_dir_ok = False
    if runtime_dir:
        try:
            st = os.stat(runtime_dir)
            runtime_dir_ok = st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700
        except OSError:
            runtime_dir_ok = False
    conf_runtime = ""
    try:
        with open("/etc/containers/containers.conf", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "runtime":
                    conf_runtime = value.strip().strip('"')
    except OSError:
        pass
    return HostObservation(
        uid=uid, user=user,
        has_subuid=has_range("/etc/subuid"), has_subgid=has_range("/etc/subgid"),
        tun_usable=os.access("/dev/net/tun", os.R_OK | os.W_OK),
        xdg_runtime_dir=runtime_dir, xdg_runtime_dir_ok=runtime_dir_ok,
        containers_conf_runtime=conf_runtime,
        cgroup_hybrid=os.path.isdir("/sys/fs/cgroup/unified"),
        podman_installed=shutil.which("podman") is not None,
        docker_installed=shutil.which("dockerd") is not None,
    )


_MARK = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


@click.command(short_help="Check which container engines answer and what is set up.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def doctor(state: AppState, fmt: str) -> None:
    """Check every container engine bottle could use, and the host.

    For each engine socket (Docker, rootful Podman, rootless Podman): does it
    answer, which version and API, rootless or not, storage and network
    backend, and are the base and sidecar images present. For the host: what
    rootless Podman needs (subordinate ids, /dev/net/tun, XDG_RUNTIME_DIR)
    and the containers.conf lines cgroup v1 hosts need. Every problem comes
    with a concrete fix. Last, what bottle's syscall policy refuses, why, and
    how an agent gets a group back. Exit status 1 when something must be fixed.
    """
    with_runtime = state.runtime
    endpoints = [e for e in _engine_endpoints() if with_runtime in (None, e[0])]
    engines = [observe_engine(rt, url, rootless, DEFAULT_BASE_IMAGE) for rt, url, rootless in endpoints]
    findings = diagnose(engines, observe_host(), DEFAULT_BASE_IMAGE) + syscall_findings()
    if fmt == "json":
        import msgspec  # noqa: PLC0415

        click.echo(msgspec.json.encode({"engines": engines, "findings": findings}).decode())
    else:
        for f in findings:
            click.echo(f"{_MARK[f.level]} {f.subject}: {f.message}")
            if f.fix and f.level != OK:
                click.echo(f"       fix: {f.fix}")
    click.get_current_context().exit(exit_code(findings))


__all__ = ["doctor", "Finding"]

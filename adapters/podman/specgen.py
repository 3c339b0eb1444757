"""``ContainerSpec`` -> libpod's SpecGenerator JSON (``POST /libpod/containers/create``)."""

from __future__ import annotations

from typing import Any

from bottle.ports.runtime import ContainerSpec


def container_specgen(spec: ContainerSpec, seccomp_profile_path: str | None = None) -> dict[str, Any]:
    """The libpod create body that makes the container ``spec`` describes.

    Every network is joined at create time (libpod takes several, each with
    its aliases), so there is no window where the container sits on only one.
    libpod takes a seccomp profile only as a path on the engine's host
    (``seccomp_profile_path``), read once at create; the caller writes
    ``spec.seccomp_profile`` there.
    """
    body: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "labels": dict(spec.labels),
        "env": dict(spec.env),
        "terminal": spec.tty,
        "stdin": spec.stdin_open,
        "no_new_privileges": spec.no_new_privileges,
        "read_only_filesystem": spec.read_only_rootfs,
    }
    if spec.command is not None:
        body["command"] = list(spec.command)
    if spec.entrypoint is not None:
        body["entrypoint"] = list(spec.entrypoint)
    if spec.user:
        body["user"] = spec.user
    if spec.workdir:
        body["work_dir"] = spec.workdir
    if spec.hostname:
        body["hostname"] = spec.hostname
    if spec.cap_drop:
        body["cap_drop"] = list(spec.cap_drop)
    if spec.cap_add:
        body["cap_add"] = list(spec.cap_add)
    if spec.networks:
        body["netns"] = {"nsmode": "bridge"}
        body["Networks"] = {attachment.network: {"aliases": list(attachment.aliases)} for attachment in spec.networks}
    mounts: list[dict[str, Any]] = [
        {
            "type": "bind",
            "source": mount.source,
            "destination": mount.target,
            "options": ["rbind", "ro" if mount.read_only else "rw"],
        }
        for mount in spec.mounts
    ]
    mounts.extend(
        {
            "type": "tmpfs",
            "source": "tmpfs",
            "destination": target,
            "options": [option for option in options.split(",") if option],
        }
        for target, options in spec.tmpfs.items()
    )
    if mounts:
        body["mounts"] = mounts
    limits: dict[str, Any] = {}
    if spec.pids_limit is not None:
        limits["pids"] = {"limit": spec.pids_limit}
    if spec.memory_bytes is not None:
        limits["memory"] = {"limit": spec.memory_bytes}
    if limits:
        body["resource_limits"] = limits
    if spec.userns:
        body["userns"] = {"nsmode": spec.userns}
    if seccomp_profile_path is not None:
        body["seccomp_profile_path"] = seccomp_profile_path
    return body

"""``DockerRuntime``: the ``ContainerRuntime`` port on docker-py's low-level API.

The low-level ``APIClient`` is used throughout: the high-level models
re-inspect after every call, which costs a round trip each time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from bottle.adapters._archive import pack, unpack
from bottle.adapters._build import follow_build
from bottle.adapters.docker.errors import map_docker_errors
from bottle.adapters._removal import remove_labelled_through
from bottle.adapters._seccomp import check_profile
from bottle.ports.errors import EngineError, NotFound
from bottle.ports.runtime import (
    BuildRequest,
    ContainerInfo,
    ContainerSpec,
    ContainerStatus,
    EngineInfo,
    ExecResult,
    FileEntry,
    ImageInfo,
    NetworkInfo,
    NetworkSpec,
    ProgressCallback,
    ProgressEvent,
    RemovalSummary,
)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_STEP = re.compile(r"^Step (\d+)/(\d+) :")
_EXITED = re.compile(r"Exited \((-?\d+)\)")
_STATUSES: frozenset[str] = frozenset({"created", "running", "paused", "restarting", "exited", "dead"})


def _label_filter(labels: Mapping[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{key}={value}" for key, value in labels.items()]}


def _status(value: str | None) -> ContainerStatus:
    return value if value in _STATUSES else "unknown"  # type: ignore[return-value]


def _progress(line: str) -> ProgressEvent:
    match = _STEP.match(line)
    if match:
        return ProgressEvent(line, step=int(match.group(1)), total=int(match.group(2)))
    return ProgressEvent(line)


class DockerRuntime:
    """A Docker engine reached through its REST API (docker-py)."""

    name = "docker"

    def __init__(self, base_url: str | None = None, timeout: float = 120) -> None:
        import docker  # noqa: F401  (imported here so that importing bottle stays cheap)

        self.address = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.timeout = timeout
        self._client: Any = None
        self._engine: EngineInfo | None = None

    @property
    def _api(self) -> Any:
        # Connecting is deferred to the first call so that constructing the
        # adapter never fails; "auto" asks the engine for its API version.
        if self._client is None:
            import docker

            with map_docker_errors("connect to Docker", address=self.address):
                self._client = docker.APIClient(base_url=self.address, version="auto", timeout=int(self.timeout))
        return self._client

    def _errors(self, action: str, *, creating: bool = False) -> Any:
        return map_docker_errors(action, address=self.address, creating=creating)

    # -- engine -----------------------------------------------------------
    def info(self) -> EngineInfo:
        with self._errors("ask Docker for its version"):
            version = self._api.version()
            info = self._api.info()
        security = [str(option) for option in info.get("SecurityOptions") or []]
        self._engine = EngineInfo(
            runtime="docker",
            version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            rootless=any("rootless" in option for option in security),
            storage_driver=str(info.get("Driver", "")),
            network_backend="libnetwork",
            cgroup_version=f"v{info['CgroupVersion']}" if info.get("CgroupVersion") else "",
            address=self.address,
            seccomp=any(option.startswith("name=seccomp") for option in security),
        )
        return self._engine

    # -- images -----------------------------------------------------------
    def build_image(self, request: BuildRequest, on_progress: ProgressCallback | None = None) -> ImageInfo:
        action = f"build image {request.tag}"
        with self._errors(action):
            stream = self._api.build(
                path=request.context_dir,
                dockerfile=request.dockerfile,
                tag=request.tag,
                buildargs=dict(request.build_args),
                labels=dict(request.labels),
                network_mode=request.network_mode,
                rm=True,
                forcerm=True,
                decode=True,
            )
            follow_build(stream, action, on_progress, _progress)
        return self.inspect_image(request.tag)

    def import_image(self, tarball: str, tag: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        repository, _, version = tag.rpartition(":")
        if not repository or "/" in version:
            repository, version = tag, "latest"
        with self._errors(f"import {tarball} as {tag}"):
            with open(tarball, "rb") as source:
                output = self._api.import_image_from_data(source, repository=repository, tag=version)
        if on_progress is not None:
            for line in str(output).splitlines():
                if line.strip():
                    on_progress(ProgressEvent(line.strip()))
        return self.inspect_image(tag)

    def image_exists(self, ref: str) -> bool:
        try:
            self.inspect_image(ref)
        except NotFound:
            return False
        return True

    def inspect_image(self, ref: str) -> ImageInfo:
        with self._errors(f"inspect image {ref}"):
            data = self._api.inspect_image(ref)
        return ImageInfo(
            id=data["Id"],
            tags=tuple(data.get("RepoTags") or ()),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            size=int(data.get("Size") or 0),
        )

    def remove_image(self, ref: str, force: bool = False) -> None:
        with self._errors(f"remove image {ref}"):
            self._api.remove_image(ref, force=force)

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        with self._errors("list images"):
            found = self._api.images(filters=_label_filter(labels))
        return [
            ImageInfo(
                id=item["Id"],
                tags=tuple(tag for tag in item.get("RepoTags") or () if tag != "<none>:<none>"),
                labels=dict(item.get("Labels") or {}),
                size=int(item.get("Size") or 0),
            )
            for item in found
        ]

    # -- networks ---------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        with self._errors(f"create network {spec.name}", creating=True):
            created = self._api.create_network(
                spec.name,
                driver="bridge",
                internal=spec.internal,
                labels=dict(spec.labels),
                # Without it Docker happily makes a second network of the same name.
                check_duplicate=True,
            )
        return NetworkInfo(id=created["Id"], name=spec.name, internal=spec.internal, labels=dict(spec.labels))

    def remove_network(self, name: str) -> None:
        with self._errors(f"remove network {name}"):
            self._api.remove_network(name)

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        with self._errors("list networks"):
            found = self._api.networks(filters=_label_filter(labels))
        return [
            NetworkInfo(
                id=item["Id"],
                name=item["Name"],
                internal=bool(item.get("Internal")),
                labels=dict(item.get("Labels") or {}),
            )
            for item in found
        ]

    # -- containers -------------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        import docker.types

        api = self._api
        if spec.userns not in (None, "", "host"):
            raise EngineError(
                f"create container {spec.name}: Docker has no user namespace mode {spec.userns!r}",
                hint="user namespace modes such as keep-id are Podman's; use `--runtime podman`",
            )
        security_opt = ["no-new-privileges"] if spec.no_new_privileges else []
        check_profile(spec, lambda: self._engine or self.info())
        if spec.seccomp_profile is not None:
            # The profile travels as text; the daemon parses it when the container starts.
            security_opt.append(f"seccomp={spec.seccomp_profile}")
        first = spec.networks[0] if spec.networks else None
        host_config = api.create_host_config(
            mounts=[
                docker.types.Mount(target=mount.target, source=mount.source, type="bind", read_only=mount.read_only)
                for mount in spec.mounts
            ],
            tmpfs=dict(spec.tmpfs) or None,
            cap_drop=list(spec.cap_drop) or None,
            cap_add=list(spec.cap_add) or None,
            security_opt=security_opt or None,
            read_only=spec.read_only_rootfs or None,
            pids_limit=spec.pids_limit,
            mem_limit=spec.memory_bytes,
            userns_mode=spec.userns or None,
            network_mode=first.network if first else None,
        )
        networking = None
        if first is not None:
            networking = api.create_networking_config(
                {first.network: api.create_endpoint_config(aliases=list(first.aliases) or None)}
            )
        for attachment in spec.networks:
            # Docker only notices a missing network at start; the port says create.
            with self._errors(f"create container {spec.name} on network {attachment.network}"):
                api.inspect_network(attachment.network)
        with self._errors(f"create container {spec.name}", creating=True):
            created = api.create_container(
                image=spec.image,
                command=list(spec.command) if spec.command is not None else None,
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                environment=dict(spec.env) or None,
                labels=dict(spec.labels),
                name=spec.name,
                user=spec.user or "",
                working_dir=spec.workdir,
                hostname=spec.hostname,
                tty=spec.tty,
                stdin_open=spec.stdin_open,
                host_config=host_config,
                networking_config=networking,
            )
        try:
            for attachment in spec.networks[1:]:
                with self._errors(f"connect container {spec.name} to network {attachment.network}"):
                    api.connect_container_to_network(
                        created["Id"], attachment.network, aliases=list(attachment.aliases) or None
                    )
        except BaseException:
            # A half-made container would hold the name; create is all or nothing.
            with self._errors(f"remove half-created container {spec.name}"):
                api.remove_container(created["Id"], force=True, v=True)
            raise
        return ContainerInfo(id=created["Id"], name=spec.name, image=spec.image, status="created", labels=dict(spec.labels))

    def start_container(self, name: str) -> None:
        with self._errors(f"start container {name}"):
            self._api.start(name)

    def stop_container(self, name: str, timeout: float = 10) -> None:
        with self._errors(f"stop container {name}"):
            self._api.stop(name, timeout=max(0, round(timeout)))

    def remove_container(self, name: str, force: bool = False) -> None:
        with self._errors(f"remove container {name}"):
            self._api.remove_container(name, force=force, v=True)

    def inspect_container(self, name: str) -> ContainerInfo:
        with self._errors(f"inspect container {name}"):
            data = self._api.inspect_container(name)
        state = data.get("State") or {}
        status = _status(state.get("Status"))
        return ContainerInfo(
            id=data["Id"],
            name=str(data.get("Name", "")).lstrip("/"),
            image=str((data.get("Config") or {}).get("Image", "")),
            status=status,
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            exit_code=int(state["ExitCode"]) if status in ("exited", "dead") and "ExitCode" in state else None,
        )

    def wait_container(self, name: str, timeout: float | None = None) -> int:
        with self._errors(f"wait for container {name}"):
            result = self._api.wait(name, timeout=timeout)
        return int(result.get("StatusCode", -1))

    def logs(self, name: str) -> bytes:
        with self._errors(f"read logs of container {name}"):
            return bytes(self._api.logs(name, stdout=True, stderr=True))

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        api = self._api
        with self._errors(f"run {argv[0] if argv else ''!r} in container {name}"):
            created = api.exec_create(
                name, list(argv), stdout=True, stderr=True, environment=dict(env) if env else None, user=user or "", workdir=workdir
            )
            stdout, stderr = api.exec_start(created["Id"], demux=True)
            exit_code = api.exec_inspect(created["Id"]).get("ExitCode")
        return ExecResult(exit_code=int(exit_code if exit_code is not None else -1), stdout=stdout or b"", stderr=stderr or b"")

    def copy_in(self, name: str, dest_dir: str, files: Sequence[FileEntry]) -> None:
        with self._errors(f"copy files into {name}:{dest_dir}"):
            self._api.put_archive(name, dest_dir, pack(files))

    def copy_out(self, name: str, path: str) -> list[FileEntry]:
        with self._errors(f"copy {name}:{path} out"):
            stream, _stat = self._api.get_archive(name, path)
            return unpack(stream)

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        with self._errors("list containers"):
            found = self._api.containers(all=True, filters=_label_filter(labels))
        result = []
        for item in found:
            status = _status(item.get("State"))
            exited = _EXITED.search(str(item.get("Status", "")))
            result.append(
                ContainerInfo(
                    id=item["Id"],
                    name=(item.get("Names") or ["/"])[0].lstrip("/"),
                    image=str(item.get("Image", "")),
                    status=status,
                    labels=dict(item.get("Labels") or {}),
                    exit_code=int(exited.group(1)) if exited and status == "exited" else None,
                )
            )
        return result

    def remove_labelled(self, labels: Mapping[str, str]) -> RemovalSummary:
        return remove_labelled_through(self, labels)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

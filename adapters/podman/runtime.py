"""``PodmanRuntime``: the ``ContainerRuntime`` port on Podman's libpod REST API.

Calls go through podman-py's ``APIClient`` (``PodmanClient.api``) rather than
its high-level models: those cannot express tmpfs mounts or network aliases on
create, re-inspect after every call, and collect a whole build before
returning, where the port wants progress while the build runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from bottle.adapters._archive import pack, unpack
from bottle.adapters._build import follow_build
from bottle.adapters.podman.errors import map_podman_errors
from bottle.adapters.podman.specgen import container_specgen
from bottle.adapters.podman.streams import demux, join_frames
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

ROOTFUL_SOCKET = "unix:///run/podman/podman.sock"
_STEP = re.compile(r"^STEP (\d+)(?:/(\d+))?:")
_STATUSES: dict[str, ContainerStatus] = {
    "created": "created",
    "configured": "created",
    "initialized": "created",
    "running": "running",
    "paused": "paused",
    "restarting": "restarting",
    "stopping": "running",
    "exited": "exited",
    "stopped": "exited",
    "removing": "dead",
    "dead": "dead",
}

# Podman 4.3 fails some calls spuriously (see list_images, copy_in); they are retried this often.
_RETRY_ATTEMPTS = 3


def _retry_spurious(send: Callable[[], Any], symptom: str) -> Any:
    """``send()`` again while the engine answers 500 with ``symptom``; the last response."""
    for _ in range(_RETRY_ATTEMPTS - 1):
        response = send()
        if not (response.status_code == 500 and symptom in response.text):
            return response
    return send()


def podman_socket_candidates(uid: int, env: Mapping[str, str], rootless: bool | None = None) -> list[str]:
    """Where to look for the Podman API socket, best first.

    An explicit ``BOTTLE_PODMAN_URL`` or ``CONTAINER_HOST`` wins. Otherwise
    a non-root user gets the rootless socket under ``$XDG_RUNTIME_DIR`` and
    root the rootful ``/run/podman/podman.sock``; ``rootless`` forces one.
    """
    explicit = [env[key] for key in ("BOTTLE_PODMAN_URL", "CONTAINER_HOST") if env.get(key)]
    if explicit:
        return explicit
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    user_socket = f"unix://{runtime_dir}/podman/podman.sock"
    want_rootless = (uid != 0) if rootless is None else rootless
    return [user_socket, ROOTFUL_SOCKET] if want_rootless else [ROOTFUL_SOCKET, user_socket]


def _socket_path(url: str) -> str | None:
    for prefix in ("unix://", "http+unix://"):
        if url.startswith(prefix):
            return url[len(prefix):]
    return None


def _pick_socket(candidates: list[str]) -> str:
    for url in candidates:
        path = _socket_path(url)
        if path is None or os.path.exists(path):
            return url
    return candidates[0]


@contextlib.contextmanager
def _profile_file(profile: str | None) -> Iterator[str | None]:
    """``profile`` in a temporary file the engine can read, removed afterwards; None for None.

    libpod reads a seccomp profile from a path on its own host, once, when
    the container is created (the filter is part of the container's stored
    spec from then on). A rootless engine runs as its own user, so the file
    is world-readable: it holds the policy, which is no secret.
    """
    if profile is None:
        yield None
        return
    handle, path = tempfile.mkstemp(prefix="bottle-seccomp-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(profile)
        os.chmod(path, 0o644)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _filters(labels: Mapping[str, str]) -> dict[str, str]:
    return {"filters": json.dumps({"label": [f"{key}={value}" for key, value in labels.items()]})}


def _progress(line: str) -> ProgressEvent:
    match = _STEP.match(line)
    if match:
        total = match.group(2)
        return ProgressEvent(line, step=int(match.group(1)), total=int(total) if total else None)
    return ProgressEvent(line)


def _image_info(data: Mapping[str, Any]) -> ImageInfo:
    return ImageInfo(
        id=str(data.get("Id", "")),
        tags=tuple(tag for tag in data.get("RepoTags") or () if tag != "<none>:<none>"),
        labels=dict(data.get("Labels") or {}),
        size=int(data.get("Size") or 0),
    )


class PodmanRuntime:
    """A Podman engine, rootful or rootless, reached through its REST API (podman-py)."""

    name = "podman"

    def __init__(self, base_url: str | None = None, rootless: bool | None = None, timeout: float = 120) -> None:
        import podman  # noqa: F401  (imported here so that importing bottle stays cheap)

        self.address = base_url or _pick_socket(podman_socket_candidates(os.getuid(), os.environ, rootless))
        self.timeout = timeout
        self._client: Any = None
        self._engine: EngineInfo | None = None

    @property
    def _api(self) -> Any:
        if self._client is None:
            import podman

            with map_podman_errors("connect to Podman", address=self.address):
                self._client = podman.PodmanClient(base_url=self.address, timeout=self.timeout)
        return self._client.api

    def _errors(self, action: str, *, creating: bool = False) -> Any:
        return map_podman_errors(action, address=self.address, creating=creating)

    # -- engine -----------------------------------------------------------
    def info(self) -> EngineInfo:
        with self._errors("ask Podman for its version"):
            response = self._api.get("/info")
            response.raise_for_status()
            data = response.json()
        host = data.get("host") or {}
        version = data.get("version") or {}
        self._engine = EngineInfo(
            runtime="podman",
            version=str(version.get("Version", "")),
            api_version=str(version.get("APIVersion", "")),
            rootless=bool((host.get("security") or {}).get("rootless")),
            storage_driver=str((data.get("store") or {}).get("graphDriverName", "")),
            network_backend=str(host.get("networkBackend", "")),
            cgroup_version=str(host.get("cgroupVersion", "")),
            address=self.address,
            seccomp=bool((host.get("security") or {}).get("seccompEnabled")),
        )
        return self._engine

    def _engine_info(self) -> EngineInfo:
        return self._engine or self.info()

    # -- images -----------------------------------------------------------
    def build_image(self, request: BuildRequest, on_progress: ProgressCallback | None = None) -> ImageInfo:
        from podman import api as podman_api

        action = f"build image {request.tag}"
        params: dict[str, Any] = {
            "t": request.tag,
            "dockerfile": request.dockerfile,
            "buildargs": json.dumps(dict(request.build_args)),
            "labels": json.dumps(dict(request.labels)),
            "rm": True,
            "forcerm": True,
            "layers": True,
        }
        params.update(_build_network_params(request.network_mode))
        with self._errors(action):
            context = podman_api.create_tar(
                anchor=request.context_dir, exclude=podman_api.prepare_containerignore(request.context_dir)
            )
            try:
                response = self._api.post(
                    "/build", params=params, data=context, headers={"Content-type": "application/x-tar"}, stream=True
                )
                response.raise_for_status()
                follow_build((json.loads(raw) for raw in response.iter_lines() if raw), action, on_progress, _progress)
            finally:
                context.close()
        return self.inspect_image(request.tag)

    def import_image(self, tarball: str, tag: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        with self._errors(f"import {tarball} as {tag}"):
            with open(tarball, "rb") as source:
                response = self._api.post(
                    "/images/import",
                    params={"reference": tag},
                    data=source,
                    headers={"Content-type": "application/x-tar"},
                )
            response.raise_for_status()
            image_id = str(response.json().get("Id", ""))
        if on_progress is not None:
            on_progress(ProgressEvent(f"imported {tag} ({image_id[:12]})"))
        return self.inspect_image(tag)

    def image_exists(self, ref: str) -> bool:
        try:
            self.inspect_image(ref)
        except NotFound:
            return False
        return True

    def inspect_image(self, ref: str) -> ImageInfo:
        from podman.errors import ImageNotFound

        with self._errors(f"inspect image {ref}"):
            response = self._api.get(f"/images/{ref}/json")
            response.raise_for_status(not_found=ImageNotFound)
            return _image_info(response.json())

    def remove_image(self, ref: str, force: bool = False) -> None:
        from podman.errors import ImageNotFound

        with self._errors(f"remove image {ref}"):
            response = self._api.delete(f"/images/{ref}", params={"force": force})
            response.raise_for_status(not_found=ImageNotFound)

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        # Podman 4.3 finds no image when given two label filters; ask for one, check the rest here.
        first = dict(list(labels.items())[:1])
        with self._errors("list images"):
            # Podman 4.3 fails the whole listing with 500 "image not known"
            # when an image is removed while it lists; a new listing is right.
            response = _retry_spurious(lambda: self._api.get("/images/json", params=_filters(first)), "image not known")
            response.raise_for_status()
            found = [_image_info(item) for item in response.json() or []]
        return [image for image in found if all(image.labels.get(key) == value for key, value in labels.items())]

    # -- networks ---------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        body = {
            "name": spec.name,
            "driver": "bridge",
            "internal": spec.internal,
            "labels": dict(spec.labels),
            # aardvark-dns before 1.11 answers every name it does not know by
            # asking the host's resolvers, even for an internal network: a
            # member could leak data through DNS. Internal networks get no DNS
            # server; create_container writes their members into /etc/hosts.
            "dns_enabled": not spec.internal,
        }
        with self._errors(f"create network {spec.name}", creating=True):
            response = self._api.post("/networks/create", data=json.dumps(body))
            response.raise_for_status()
            data = response.json()
        return NetworkInfo(id=str(data.get("id", "")), name=spec.name, internal=spec.internal, labels=dict(spec.labels))

    def remove_network(self, name: str) -> None:
        with self._errors(f"remove network {name}"):
            response = self._api.delete(f"/networks/{name}")
            response.raise_for_status()

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        with self._errors("list networks"):
            response = self._api.get("/networks/json", params=_filters(labels))
            response.raise_for_status()
            found = response.json() or []
        return [
            NetworkInfo(
                id=str(item.get("id", "")),
                name=str(item.get("name", "")),
                internal=bool(item.get("internal")),
                labels=dict(item.get("labels") or {}),
            )
            for item in found
        ]

    # -- containers -------------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.pids_limit is not None or spec.memory_bytes is not None:
            engine = self._engine_info()
            if engine.rootless and engine.cgroup_version == "v1":
                # Podman would only warn and drop the limits; the port promises them.
                raise EngineError(
                    f"create container {spec.name}: rootless Podman cannot apply pids or memory limits on cgroup v1",
                    hint="boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), use rootful Podman or Docker, "
                    "or run without limits",
                )
        check_profile(spec, self._engine_info)
        with _profile_file(spec.seccomp_profile) as profile_path:
            body = container_specgen(spec, profile_path)
            peers = self._internal_peers(spec)
            if peers:
                body["hostadd"] = [f"{peer}:{address}" for peer, address in peers]
            with self._errors(f"create container {spec.name}", creating=True):
                response = self._api.post("/containers/create", data=json.dumps(body))
                response.raise_for_status()
                data = response.json()
        return ContainerInfo(id=str(data.get("Id", "")), name=spec.name, image=spec.image, status="created", labels=dict(spec.labels))

    def _internal_peers(self, spec: ContainerSpec) -> list[tuple[str, str]]:
        """(name or alias, address) of the running members of ``spec``'s internal networks.

        Internal networks have no DNS server (see ``create_network``), so a
        new member learns its peers through /etc/hosts: those running now.
        """
        api = self._api
        entries: list[tuple[str, str]] = []
        for attachment in spec.networks:
            with self._errors(f"create container {spec.name} on network {attachment.network}"):
                network = api.get(f"/networks/{attachment.network}/json")
                network.raise_for_status()
                if not network.json().get("internal") or network.json().get("dns_enabled"):
                    continue
                net_name = network.json()["name"]
                members = api.get("/containers/json", params={"filters": json.dumps({"network": [net_name]})})
                members.raise_for_status()
                for member in members.json() or []:
                    detail = api.get(f"/containers/{member['Id']}/json")
                    if detail.status_code == 404:
                        continue  # gone meanwhile
                    detail.raise_for_status()
                    data = detail.json()
                    endpoint = ((data.get("NetworkSettings") or {}).get("Networks") or {}).get(net_name) or {}
                    address = endpoint.get("IPAddress")
                    if not address:
                        continue
                    short_id = str(data.get("Id", ""))[:12]
                    for peer in [str(data.get("Name", "")), *(endpoint.get("Aliases") or [])]:
                        if peer and peer != short_id and (peer, address) not in entries:
                            entries.append((peer, address))
        return entries

    def start_container(self, name: str) -> None:
        with self._errors(f"start container {name}"):
            response = self._api.post(f"/containers/{name}/start")
            response.raise_for_status()

    def stop_container(self, name: str, timeout: float = 10) -> None:
        seconds = max(0, round(timeout))
        with self._errors(f"stop container {name}"):
            response = self._api.post(
                f"/containers/{name}/stop", params={"timeout": seconds}, timeout=seconds + self.timeout
            )
            response.raise_for_status()

    def remove_container(self, name: str, force: bool = False) -> None:
        with self._errors(f"remove container {name}"):
            params: dict[str, Any] = {"force": force, "v": True}
            if force:
                params["timeout"] = 0  # force means kill now, not Podman's graceful 10 s stop
            response = self._api.delete(f"/containers/{name}", params=params)
            response.raise_for_status()

    def inspect_container(self, name: str) -> ContainerInfo:
        with self._errors(f"inspect container {name}"):
            response = self._api.get(f"/containers/{name}/json")
            response.raise_for_status()
            data = response.json()
        state = data.get("State") or {}
        status = _STATUSES.get(str(state.get("Status", "")).lower(), "unknown")
        return ContainerInfo(
            id=str(data.get("Id", "")),
            name=str(data.get("Name", "")),
            image=str(data.get("ImageName", "")),
            status=status,
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            exit_code=int(state["ExitCode"]) if status in ("exited", "dead") and "ExitCode" in state else None,
        )

    def wait_container(self, name: str, timeout: float | None = None) -> int:
        with self._errors(f"wait for container {name}"):
            response = self._api.post(
                f"/containers/{name}/wait",
                params={"condition": ["exited", "stopped"]},
                timeout=timeout if timeout is not None else 10 * 365 * 24 * 3600,
            )
            response.raise_for_status()
            return int(response.json())

    def logs(self, name: str) -> bytes:
        with self._errors(f"read logs of container {name}"):
            response = self._api.get(f"/containers/{name}/logs", params={"stdout": True, "stderr": True})
            response.raise_for_status()
            return join_frames(response.content)

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
        body: dict[str, Any] = {"AttachStdout": True, "AttachStderr": True, "AttachStdin": False, "Cmd": list(argv), "Tty": False}
        if env:
            body["Env"] = [f"{key}={value}" for key, value in env.items()]
        if user:
            body["User"] = user
        if workdir:
            body["WorkingDir"] = workdir
        with self._errors(f"run {argv[0] if argv else ''!r} in container {name}"):
            created = api.post(f"/containers/{name}/exec", data=json.dumps(body))
            created.raise_for_status()
            exec_id = created.json()["Id"]
            started = api.post(f"/exec/{exec_id}/start", data=json.dumps({"Detach": False, "Tty": False}))
            started.raise_for_status()
            stdout, stderr = demux(started.content)
            exit_code = self._exec_exit_code(exec_id)
        return ExecResult(exit_code=exit_code, stdout=stdout, stderr=stderr)

    def _exec_exit_code(self, exec_id: str) -> int:
        # The attach stream can end a moment before Podman records the exit.
        deadline = time.monotonic() + 5
        while True:
            response = self._api.get(f"/exec/{exec_id}/json")
            response.raise_for_status()
            data = response.json()
            if not data.get("Running") or time.monotonic() > deadline:
                code = data.get("ExitCode")
                return int(code) if code is not None else -1
            time.sleep(0.01)

    def copy_in(self, name: str, dest_dir: str, files: Sequence[FileEntry]) -> None:
        with self._errors(f"copy files into {name}:{dest_dir}"):
            # Podman would create a missing destination; the port says it must exist.
            probe = self._api.head(f"/containers/{name}/archive", params={"path": dest_dir})
            probe.raise_for_status()
            # copyUIDGID=false keeps the archive's owners; Podman's default chowns to the container user.
            archive = pack(files)
            # Podman's copier can fail an upload it has fully read with
            # "broken pipe" (500); writing the same files again is safe.
            response = _retry_spurious(
                lambda: self._api.put(
                    f"/containers/{name}/archive", params={"path": dest_dir, "copyUIDGID": False}, data=archive, headers={"Content-type": "application/x-tar"}
                ),
                "broken pipe",
            )
            response.raise_for_status()

    def copy_out(self, name: str, path: str) -> list[FileEntry]:
        with self._errors(f"copy {name}:{path} out"):
            response = self._api.get(f"/containers/{name}/archive", params={"path": path})
            response.raise_for_status()
            return unpack([response.content])

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        with self._errors("list containers"):
            response = self._api.get("/containers/json", params={"all": True, **_filters(labels)})
            response.raise_for_status()
            found = response.json() or []
        result = []
        for item in found:
            status = _STATUSES.get(str(item.get("State", "")).lower(), "unknown")
            result.append(
                ContainerInfo(
                    id=str(item.get("Id", "")),
                    name=(item.get("Names") or [""])[0],
                    image=str(item.get("Image", "")),
                    status=status,
                    labels=dict(item.get("Labels") or {}),
                    exit_code=int(item["ExitCode"]) if status == "exited" and "ExitCode" in item else None,
                )
            )
        return result

    def remove_labelled(self, labels: Mapping[str, str]) -> RemovalSummary:
        return remove_labelled_through(self, labels, network_ref="name")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _build_network_params(mode: str | None) -> dict[str, str]:
    """The build API's network parameters for ``BuildRequest.network_mode``.

    Podman's build API does not read Docker's ``networkmode`` as a mode: it
    is buildah's network *configuration* policy, and with no ``nsoptions``
    the RUN steps share the host's network namespace. So "none" is a private
    namespace with networking disabled, the default a private namespace,
    and anything else a named network to join.
    """
    if mode in (None, "", "default", "bridge"):
        namespace: dict[str, object] = {"Name": "network"}
    elif mode == "host":
        namespace = {"Name": "network", "Host": True}
    elif mode == "none":
        return {"nsoptions": json.dumps([{"Name": "network"}]), "networkmode": "NetworkDisabled"}
    else:
        namespace = {"Name": "network", "Path": mode}
    return {"nsoptions": json.dumps([namespace])}

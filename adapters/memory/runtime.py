"""``InMemoryRuntime``: a container engine made of dicts, for fast tests of the core.

It keeps images, networks and containers with their labels and files, and
raises the same errors a real engine's adapter does. It runs no process:
``exec`` answers from an ``exec_handler`` you give it, else raises
``EngineError``; builds follow ``FROM``/``ARG``/``COPY``/``LABEL`` and refuse
``RUN``. ``tests/contract`` holds it to the port where it can be held.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bottle.adapters._errors_common import require_labels
from bottle.adapters._seccomp import check_profile
from bottle.ports.errors import BuildFailed, EngineError, NameConflict, NotFound
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

ExecHandler = Callable[[str, Sequence[str]], ExecResult]

_BASE_DIRS = ("/", "/etc", "/tmp", "/root", "/home", "/var", "/var/tmp", "/opt", "/usr", "/usr/local", "/srv", "/run")
_ARG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _matches(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(key) == value for key, value in want.items())


def _normalise_ref(ref: str) -> str:
    """Tags as Podman shows them: ``name`` -> ``localhost/name:latest``."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        name, tag = ref, "latest"
    if "/" not in name:
        name = f"localhost/{name}"
    return f"{name}:{tag}"


@dataclass
class _Container:
    info: ContainerInfo
    spec: ContainerSpec
    image_id: str
    files: dict[str, FileEntry] = field(default_factory=dict)  # absolute path -> entry (path = absolute)


class InMemoryRuntime:
    """A fake ``ContainerRuntime`` holding its state in dicts."""

    name = "memory"

    def __init__(self, images: Iterable[str] = (), exec_handler: ExecHandler | None = None, seccomp: bool = True) -> None:
        # False plays an engine without seccomp, which must refuse a profile.
        self.seccomp = seccomp
        self.images: dict[str, ImageInfo] = {}
        self.networks: dict[str, NetworkInfo] = {}
        self.containers: dict[str, _Container] = {}
        self.image_files: dict[str, dict[str, FileEntry]] = {}  # image id -> imported root filesystem
        self.exec_handler = exec_handler
        self._ids = itertools.count(1)
        for ref in images:
            self.add_image(ref)

    # -- test-double helpers ----------------------------------------------
    def add_image(self, ref: str, labels: Mapping[str, str] | None = None) -> ImageInfo:
        """Make ``ref`` a local image (what a pull or bootstrap would have done)."""
        tag = _normalise_ref(ref)
        image = ImageInfo(id=self._new_id("sha256:"), tags=(tag,), labels=dict(labels or {}), size=0)
        self._drop_tag(tag)
        self.images[image.id] = image
        return image

    def _new_id(self, prefix: str = "") -> str:
        return prefix + hashlib.sha256(str(next(self._ids)).encode()).hexdigest()

    def _drop_tag(self, tag: str) -> None:
        for image_id, image in list(self.images.items()):
            if tag in image.tags:
                self.images[image_id] = replace(image, tags=tuple(t for t in image.tags if t != tag))

    def _image(self, ref: str) -> ImageInfo:
        tag = _normalise_ref(ref)
        for image in self.images.values():
            if ref == image.id or tag in image.tags or (len(ref) >= 12 and image.id.removeprefix("sha256:").startswith(ref)):
                return image
        raise NotFound(f"image {ref}: not found", hint="build or import it first", engine_message=f"no such image: {ref}")

    def _container(self, name: str) -> _Container:
        for container in self.containers.values():
            if name in (container.info.name, container.info.id):
                return container
        raise NotFound(f"container {name}: not found", hint="check the name", engine_message=f"no such container: {name}")

    def _network(self, name: str) -> NetworkInfo:
        for network in self.networks.values():
            if name in (network.name, network.id):
                return network
        raise NotFound(f"network {name}: not found", hint="check the name", engine_message=f"network {name} not found")

    # -- engine -----------------------------------------------------------
    def info(self) -> EngineInfo:
        return EngineInfo(runtime="memory", version="0", api_version="0", rootless=False, address="memory://", seccomp=self.seccomp)

    # -- images -----------------------------------------------------------
    def build_image(self, request: BuildRequest, on_progress: ProgressCallback | None = None) -> ImageInfo:
        path = os.path.join(request.context_dir, request.dockerfile)
        try:
            with open(path, encoding="utf-8") as handle:
                lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise BuildFailed(f"build image {request.tag} failed: cannot read {path}", engine_message=str(exc)) from exc
        args: dict[str, str] = {}
        labels: dict[str, str] = {}
        base: ImageInfo | None = None

        def expand(text: str) -> str:
            return _ARG_REF.sub(lambda m: args.get(m.group(1) or m.group(3), m.group(2) or ""), text)

        for step, line in enumerate(lines, start=1):
            if on_progress is not None:
                on_progress(ProgressEvent(f"STEP {step}/{len(lines)}: {line}", step=step, total=len(lines)))
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "ARG":
                key, _, default = rest.strip().partition("=")
                args[key] = request.build_args.get(key, default)
            elif instruction == "FROM":
                ref = expand(rest.split()[0])
                try:
                    base = self._image(ref)
                except NotFound as exc:
                    raise BuildFailed(
                        f"build image {request.tag} failed: base image {ref} not found",
                        engine_message=exc.engine_message,
                        log_tail=(line,),
                    ) from exc
                labels.update(base.labels)
            elif instruction == "LABEL":
                for pair in shlex.split(expand(rest)):
                    key, _, value = pair.partition("=")
                    labels[key] = value
            elif instruction == "COPY":
                for source in shlex.split(rest)[:-1]:
                    if not source.startswith("--") and not os.path.exists(os.path.join(request.context_dir, source)):
                        raise BuildFailed(f"build image {request.tag} failed: {source} is not in the context", log_tail=(line,))
            elif instruction == "RUN":
                raise EngineError(
                    f"build image {request.tag}: the in-memory runtime cannot run {line!r}",
                    hint="use a real engine for Dockerfiles with RUN steps",
                )
        if base is None:
            raise BuildFailed(f"build image {request.tag} failed: no FROM line", log_tail=tuple(lines[-20:]))
        labels.update(request.labels)
        return self.add_image(request.tag, labels)

    def import_image(self, tarball: str, tag: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        if not os.path.isfile(tarball):
            raise NotFound(f"import {tarball}: no such file", engine_message=f"{tarball} does not exist")
        from bottle.adapters._archive import unpack

        with open(tarball, "rb") as handle:
            entries = unpack([handle.read()])
        image = self.add_image(tag)
        self.image_files[image.id] = {"/" + entry.path: replace(entry, path="/" + entry.path) for entry in entries}
        if on_progress is not None:
            on_progress(ProgressEvent(f"imported {tag}"))
        return image

    def image_exists(self, ref: str) -> bool:
        try:
            self._image(ref)
        except NotFound:
            return False
        return True

    def inspect_image(self, ref: str) -> ImageInfo:
        return self._image(ref)

    def remove_image(self, ref: str, force: bool = False) -> None:
        image = self._image(ref)
        users = [c.info.name for c in self.containers.values() if image.id == c.image_id]
        if users and not force:
            raise EngineError(f"remove image {ref}: used by container {users[0]}", engine_message="image is in use")
        del self.images[image.id]

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        return [image for image in self.images.values() if _matches(image.labels, labels)]

    # -- networks ---------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        if any(network.name == spec.name for network in self.networks.values()):
            raise NameConflict(f"create network {spec.name}: the name is taken", engine_message="network already exists")
        network = NetworkInfo(id=self._new_id(), name=spec.name, internal=spec.internal, labels=dict(spec.labels))
        self.networks[network.id] = network
        return network

    def remove_network(self, name: str) -> None:
        network = self._network(name)
        members = [c.info.name for c in self.containers.values() if any(a.network in (network.name, network.id) for a in c.spec.networks)]
        if members:
            raise EngineError(f"remove network {name}: container {members[0]} is attached", engine_message="network has active endpoints")
        del self.networks[network.id]

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        return [network for network in self.networks.values() if _matches(network.labels, labels)]

    # -- containers -------------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        if any(c.info.name == spec.name for c in self.containers.values()):
            raise NameConflict(f"create container {spec.name}: the name is taken", engine_message="name already in use")
        image = self._image(spec.image)
        for attachment in spec.networks:
            self._network(attachment.network)
        check_profile(spec, self.info)
        info = ContainerInfo(id=self._new_id(), name=spec.name, image=spec.image, status="created", labels={**image.labels, **spec.labels})
        files = {path: FileEntry(path=path, mode=0o755, is_dir=True) for path in _BASE_DIRS}
        files.update(self.image_files.get(image.id, {}))
        self.containers[info.id] = _Container(info=info, spec=spec, image_id=image.id, files=files)
        return info

    def _set_status(self, container: _Container, status: ContainerStatus, exit_code: int | None = None) -> None:
        container.info = replace(container.info, status=status, exit_code=exit_code)

    def start_container(self, name: str) -> None:
        container = self._container(name)
        if container.info.status != "running":
            self._set_status(container, "running")

    def stop_container(self, name: str, timeout: float = 10) -> None:
        container = self._container(name)
        if container.info.status == "running":
            self._set_status(container, "exited", 0)

    def remove_container(self, name: str, force: bool = False) -> None:
        container = self._container(name)
        if container.info.status == "running" and not force:
            raise EngineError(f"remove container {name}: it is running", hint="stop it first or force", engine_message="container is running")
        del self.containers[container.info.id]

    def inspect_container(self, name: str) -> ContainerInfo:
        return self._container(name).info

    def wait_container(self, name: str, timeout: float | None = None) -> int:
        container = self._container(name)
        if container.info.status in ("exited", "dead"):
            return container.info.exit_code or 0
        raise EngineError(f"wait for container {name}: it runs no process and will not exit by itself", hint="stop it")

    def logs(self, name: str) -> bytes:
        self._container(name)
        return b""

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        container = self._container(name)
        if container.info.status != "running":
            raise EngineError(f"run in container {name}: it is not running", engine_message="container is not running")
        if self.exec_handler is None:
            raise EngineError(
                f"run {argv[0] if argv else ''!r} in container {name}: the in-memory runtime runs no processes",
                hint="give InMemoryRuntime an exec_handler, or use a real engine",
            )
        return self.exec_handler(name, argv)

    def copy_in(self, name: str, dest_dir: str, files: Sequence[FileEntry]) -> None:
        container = self._container(name)
        dest = posixpath.normpath(dest_dir)
        if dest not in container.files or not container.files[dest].is_dir:
            raise NotFound(f"copy files into {name}:{dest_dir}: no such directory", engine_message=f"{dest_dir}: no such file or directory")
        for entry in files:
            relative = posixpath.normpath(entry.path)
            if entry.path.startswith("/") or relative == ".." or relative.startswith("../"):
                raise ValueError(f"file entry path must be relative and inside the destination: {entry.path!r}")
            target = posixpath.join(dest, relative)
            parent = posixpath.dirname(target)
            while parent not in container.files:
                container.files[parent] = FileEntry(path=parent, mode=0o755, uid=entry.uid, gid=entry.gid, is_dir=True)
                parent = posixpath.dirname(parent)
            container.files[target] = replace(entry, path=target)

    def copy_out(self, name: str, path: str) -> list[FileEntry]:
        container = self._container(name)
        root = posixpath.normpath(path)
        if root not in container.files:
            raise NotFound(f"copy {name}:{path} out: not found", engine_message=f"{path}: no such file or directory")
        parent = posixpath.dirname(root)
        found = [
            replace(entry, path=posixpath.relpath(entry.path, parent))
            for key, entry in sorted(container.files.items())
            if key == root or key.startswith(root.rstrip("/") + "/")
        ]
        return found

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [c.info for c in self.containers.values() if _matches(c.info.labels, labels)]

    def remove_labelled(self, labels: Mapping[str, str]) -> RemovalSummary:
        require_labels(labels)
        containers = [c.info for c in list(self.containers.values()) if _matches(c.info.labels, labels)]
        for info in containers:
            self.containers.pop(info.id, None)
        networks = self.list_networks(labels)
        for network in networks:
            self.networks.pop(network.id, None)
        images = self.list_images(labels)
        for image in images:
            self.images.pop(image.id, None)
        return RemovalSummary(
            containers=tuple(info.name for info in containers),
            networks=tuple(network.name for network in networks),
            images=tuple(image.tags[0] if image.tags else image.id for image in images),
        )

    def close(self) -> None:
        """Nothing to release."""

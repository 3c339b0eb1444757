"""The ``ContainerRuntime`` port: what bottle needs from a container engine.

Every type here is a frozen dataclass of our own; SDK objects never cross
this boundary. The docstrings are the contract that ``tests/contract/``
checks against every adapter (Docker, rootful Podman, rootless Podman and the
in-memory double, where the double supports the behaviour).

Names: every operation that takes ``name`` accepts a container, network or
image by its name (or id). Labels are plain ``str -> str`` maps; ``labels``
filters match resources that carry *all* the given pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

ContainerStatus = Literal["created", "running", "paused", "restarting", "exited", "dead", "unknown"]


@dataclass(frozen=True)
class EngineInfo:
    """What an engine says about itself (``bottle doctor`` shows it)."""

    runtime: str  # "docker" | "podman" | "memory"
    version: str
    api_version: str
    rootless: bool
    storage_driver: str = ""
    network_backend: str = ""
    cgroup_version: str = ""
    address: str = ""
    # Whether the engine can apply a seccomp profile; None when it does not say.
    seccomp: bool | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """One line of progress from a long operation (build, import)."""

    message: str
    step: int | None = None
    total: int | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class BuildRequest:
    """Build ``tag`` from ``dockerfile`` (a path relative to ``context_dir``).

    ``context_dir`` is a host directory. ``build_args`` never carry secrets:
    they end up in the image's history.
    """

    context_dir: str
    tag: str
    dockerfile: str = "Dockerfile"
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Where the build's RUN steps may connect; "host" is what a corporate
    # proxy setup sometimes needs. None means the engine's default.
    network_mode: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True)
class NetworkSpec:
    """A bridge network. ``internal=True`` means no route out and no outside DNS."""

    name: str
    internal: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    internal: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkAttachment:
    """Join ``network``; peers on it resolve this container by name and by each alias."""

    network: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    """A bind mount of host ``source`` at ``target`` in the container."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container.

    ``networks[0]`` is the network the container is created on; the others
    are connected before it starts. ``command`` replaces the image's CMD,
    ``entrypoint`` its ENTRYPOINT. ``env`` values may be secrets only for
    sidecars that hold them; the agent's spec never carries one.

    ``seccomp_profile`` is a seccomp profile as JSON text, in the format
    Docker and Podman share (``bottle.core.seccomp.render_profile``); None
    leaves the engine's own default profile, which bottle never does for a
    bottle's containers.
    """

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: tuple[NetworkAttachment, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # target -> mount options
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = False
    read_only_rootfs: bool = False
    pids_limit: int | None = None
    memory_bytes: int | None = None
    tty: bool = False
    stdin_open: bool = False
    # Rootless Podman: "keep-id" maps the invoking user to the same uid inside.
    userns: str | None = None
    seccomp_profile: str | None = None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    status: ContainerStatus
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class FileEntry:
    """A regular file or directory to copy into, or copied out of, a container.

    ``path`` is relative (``a/b.txt``), never absolute and never containing
    ``..``. ``mode`` holds the permission bits (e.g. ``0o600``).
    """

    path: str
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    is_dir: bool = False


@dataclass(frozen=True)
class RemovalSummary:
    """What a ``remove_labelled`` call removed, by kind, as names."""

    containers: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    images: tuple[str, ...] = ()


@runtime_checkable
class ContainerRuntime(Protocol):
    """A container engine reached through its API.

    Errors: every method raises only ``bottle.ports.errors`` types —
    ``EngineUnreachable`` when the engine does not answer, ``NotFound`` for a
    missing image/network/container (for images too, whatever the SDK calls
    it), ``NameConflict`` when creating a name that exists, ``BuildFailed``
    for a failed build, ``PermissionDenied``, else ``EngineError``.
    """

    name: str
    """``"docker"``, ``"podman"`` or ``"memory"``."""

    def info(self) -> EngineInfo:
        """Describe the engine; raises ``EngineUnreachable`` if it does not answer."""
        ...

    # -- images ---------------------------------------------------------
    def build_image(self, request: BuildRequest, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Build an image, calling ``on_progress`` for each line of build output.

        The result carries ``request.labels`` and is tagged ``request.tag``.
        A failing step raises ``BuildFailed`` whose ``log_tail`` has the last
        lines of output. Progress arrives before the call returns.
        """
        ...

    def import_image(self, tarball: str, tag: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Import a root filesystem tarball (plain or gzip) as image ``tag``."""
        ...

    def image_exists(self, ref: str) -> bool:
        """True if ``ref`` (tag or id) names a local image. Never raises NotFound."""
        ...

    def inspect_image(self, ref: str) -> ImageInfo:
        """Describe a local image; ``NotFound`` if there is none."""
        ...

    def remove_image(self, ref: str, force: bool = False) -> None:
        """Remove a local image; ``NotFound`` if there is none."""
        ...

    def list_images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        """Local images carrying all ``labels``."""
        ...

    # -- networks -------------------------------------------------------
    def create_network(self, spec: NetworkSpec) -> NetworkInfo:
        """Create a bridge network; ``NameConflict`` if the name is taken.

        An internal network gives its members no route to any address off
        the network and no resolution of outside names, while members still
        resolve each other by container name and alias.

        On Podman a member resolves the peers that were running when it was
        created (written into its /etc/hosts): aardvark-dns before 1.11
        forwards unknown names to the host's resolvers even from internal
        networks, so internal networks there get no DNS server at all.
        Create servers before their clients.
        """
        ...

    def remove_network(self, name: str) -> None:
        """Remove a network; ``NotFound`` if there is none."""
        ...

    def list_networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """Networks carrying all ``labels``."""
        ...

    # -- containers -----------------------------------------------------
    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (not start) a container exactly as ``spec`` says.

        ``NameConflict`` if the name is taken, ``NotFound`` if the image or a
        network is missing. Security options are applied as asked: user,
        dropped/added capabilities, no-new-privileges, read-only root,
        pids and memory limits are what a process inside observes; an engine
        that cannot apply the limits (rootless Podman on cgroup v1) raises
        ``EngineError`` instead of dropping them.

        A ``seccomp_profile`` is applied exactly: every process of the
        container, and every ``exec`` into it, runs under that filter and no
        other. An engine that cannot apply it (seccomp switched off, a
        profile it cannot read or parse) raises ``EngineError`` here, never
        falls back to its default profile; Docker parses the profile only
        when the container starts, so there ``start_container`` raises.
        """
        ...

    def start_container(self, name: str) -> None:
        """Start a created container."""
        ...

    def stop_container(self, name: str, timeout: float = 10) -> None:
        """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Stopping a container that is not running is not an error.
        """
        ...

    def remove_container(self, name: str, force: bool = False) -> None:
        """Remove a container (``force`` kills a running one first); ``NotFound`` if none."""
        ...

    def inspect_container(self, name: str) -> ContainerInfo:
        """Describe a container; ``NotFound`` if there is none."""
        ...

    def wait_container(self, name: str, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code."""
        ...

    def logs(self, name: str) -> bytes:
        """Everything the container wrote to stdout and stderr so far."""
        ...

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` in a running container and return exit code, stdout and stderr separately."""
        ...

    def copy_in(self, name: str, dest_dir: str, files: Sequence[FileEntry]) -> None:
        """Write ``files`` under absolute ``dest_dir`` in the container.

        Content, mode, uid and gid are kept as given. Works on a created
        container before it starts. ``dest_dir`` must exist.
        """
        ...

    def copy_out(self, name: str, path: str) -> list[FileEntry]:
        """Read the file or directory tree at absolute ``path``.

        Paths in the result are relative to ``path``'s parent (copying out
        ``/etc/hostname`` gives one entry ``hostname``). ``NotFound`` if the
        path does not exist. Content and mode are the container's; uid/gid
        are too on Docker, while Podman reports the caller's ids.
        """
        ...

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying all ``labels``."""
        ...

    def remove_labelled(self, labels: Mapping[str, str]) -> RemovalSummary:
        """Force-remove every container, then every network, then every image carrying all ``labels``.

        Idempotent: resources that vanish meanwhile are not errors. An empty
        ``labels`` raises ``ValueError`` rather than remove everything.
        """
        ...

    def close(self) -> None:
        """Release the client connection."""
        ...

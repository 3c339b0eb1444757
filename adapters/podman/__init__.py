"""The Podman adapter (podman-py is imported only when a ``PodmanRuntime`` is made)."""

from bottle.adapters.podman.runtime import PodmanRuntime

__all__ = ["PodmanRuntime"]

"""The Docker adapter (docker-py is imported only when a ``DockerRuntime`` is made)."""

from bottle.adapters.docker.runtime import DockerRuntime

__all__ = ["DockerRuntime"]

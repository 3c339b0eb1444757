"""The in-memory ``ContainerRuntime`` test double."""

from bottle.adapters.memory.runtime import InMemoryRuntime

__all__ = ["InMemoryRuntime"]

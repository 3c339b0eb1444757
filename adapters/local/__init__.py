"""Adapters on the local host: the state store, the system clock and randomness, secrets."""

from bottle.adapters.local.secret_source import EnvFileSecretSource, SecretUnavailable
from bottle.adapters.local.state_store import LocalStateStore, UnsafeStateFile
from bottle.adapters.local.system import SystemClock, SystemRandomness

__all__ = ["EnvFileSecretSource", "LocalStateStore", "SecretUnavailable", "SystemClock", "SystemRandomness", "UnsafeStateFile"]

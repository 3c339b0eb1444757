"""The guard sidecar: the bottle's only way out for HTTP(S)."""

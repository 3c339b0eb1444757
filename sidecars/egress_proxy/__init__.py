"""The egress proxy sidecar: routes, credential injection, and the agent's HTTP(S) proxy."""

"""The supervise sidecar: the agent files proposals over HTTP and MCP; the host decides."""

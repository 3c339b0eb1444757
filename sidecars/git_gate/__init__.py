"""The git gate sidecar: smart-HTTP git for the agent, the only way a push leaves a bottle."""

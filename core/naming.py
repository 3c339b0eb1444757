"""Names and labels of the resources one bottle owns.

Every image, network and container bottle creates carries ``LABEL_MANAGED``
and the bottle's identity and role, so ``cleanup`` can find anything left
behind by label alone, and is named ``bottle-<role>-<identity>``.
"""

from __future__ import annotations

LABEL_MANAGED = "io.bottle.managed"
LABEL_IDENTITY = "io.bottle.identity"
LABEL_ROLE = "io.bottle.role"
LABEL_AGENT = "io.bottle.agent"

ROLE_AGENT = "agent"
ROLE_GUARD = "guard"
ROLE_EGRESS_PROXY = "egress-proxy"
ROLE_GIT_GATE = "git-gate"
ROLE_SUPERVISE = "supervise"
ROLE_INTERNAL_NET = "internal"
ROLE_EGRESS_NET = "egress"

ROLES = (
    ROLE_AGENT,
    ROLE_GUARD,
    ROLE_EGRESS_PROXY,
    ROLE_GIT_GATE,
    ROLE_SUPERVISE,
    ROLE_INTERNAL_NET,
    ROLE_EGRESS_NET,
)


def resource_name(role: str, identity: str) -> str:
    """``bottle-<role>-<identity>``: the name of a bottle's container or network."""
    return f"bottle-{role}-{identity}"


def managed_labels(identity: str, role: str, agent: str | None = None) -> dict[str, str]:
    """The labels every resource of bottle ``identity`` in ``role`` carries."""
    labels = {LABEL_MANAGED: "true", LABEL_IDENTITY: identity, LABEL_ROLE: role}
    if agent is not None:
        labels[LABEL_AGENT] = agent
    return labels

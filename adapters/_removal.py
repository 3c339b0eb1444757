"""``remove_labelled`` in terms of the port's own operations, shared by the engine adapters."""

from __future__ import annotations

from collections.abc import Mapping

from bottle.adapters._errors_common import require_labels
from bottle.ports.errors import NotFound
from bottle.ports.runtime import ContainerRuntime, NetworkInfo, RemovalSummary


def remove_labelled_through(
    runtime: ContainerRuntime, labels: Mapping[str, str], *, network_ref: str = "id"
) -> RemovalSummary:
    """Force-remove containers, then networks, then images carrying all ``labels``.

    Containers go first because a network in use cannot be removed. What
    vanishes meanwhile is skipped, so the call is idempotent. ``network_ref``
    says how the engine addresses a network on removal (``"id"`` or ``"name"``).
    """
    require_labels(labels)
    containers, networks, images = [], [], []
    for container in runtime.list_containers(labels):
        try:
            runtime.remove_container(container.id, force=True)
        except NotFound:
            continue
        containers.append(container.name)
    for network in runtime.list_networks(labels):
        try:
            runtime.remove_network(_network_ref(network, network_ref))
        except NotFound:
            continue
        networks.append(network.name)
    for image in runtime.list_images(labels):
        try:
            runtime.remove_image(image.id, force=True)
        except NotFound:
            continue
        images.append(image.tags[0] if image.tags else image.id)
    return RemovalSummary(containers=tuple(containers), networks=tuple(networks), images=tuple(images))


def _network_ref(network: NetworkInfo, how: str) -> str:
    return network.name if how == "name" else network.id

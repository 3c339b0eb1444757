"""``remove_labelled`` in terms of the port's own operations, shared by the engine adapters."""

from __future__ import annotations

from collections.abc import Mapping

from bottle.adapters._errors_common import require_labels
from bottle.ports.errors import NotFound, RuntimeFailure
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
    # An image built FROM another labelled image holds it: the engine refuses
    # the parent until the child is gone, so retry the refused ones while the
    # previous pass removed something.
    pending = list(runtime.list_images(labels))
    while pending:
        refused: list[tuple[object, RuntimeFailure]] = []
        for image in pending:
            try:
                runtime.remove_image(image.id, force=True)
            except NotFound:
                continue
            except RuntimeFailure as exc:
                refused.append((image, exc))
                continue
            images.append(image.tags[0] if image.tags else image.id)
        if len(refused) == len(pending):
            raise refused[0][1]
        pending = [image for image, _ in refused]
    return RemovalSummary(containers=tuple(containers), networks=tuple(networks), images=tuple(images))


def _network_ref(network: NetworkInfo, how: str) -> str:
    return network.name if how == "name" else network.id

"""Settings of one contract-suite session, and back doors: what each engine itself says, through its raw SDK, not through our adapter.

The contract suite asks these (or the container, from inside) to check what
an adapter did, the way zarr's suite checks a store through the raw storage.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from bottle.adapters.memory.runtime import InMemoryRuntime

RUN_ID = secrets.token_hex(4)
RUN_LABEL = "io.bottle.test-run"
CASE_LABEL = "io.bottle.test-case"
RUN_LABELS = {RUN_LABEL: RUN_ID}
BASE_IMAGE = os.environ.get("BOTTLE_BASE_IMAGE", "localhost/bottle-base:bookworm")


def _label_list(labels: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in labels.items()]


class BackDoor(Protocol):
    def container(self, name: str) -> dict[str, Any] | None:
        """``{"labels", "status", "exit_code", "image"}`` of a container, or None if it does not exist."""

    def network(self, name: str) -> dict[str, Any] | None:
        """``{"labels", "internal"}`` of a network, or None."""

    def image(self, ref: str) -> dict[str, Any] | None:
        """``{"labels", "tags"}`` of an image, or None."""

    def labelled(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        """Names of containers, networks and images carrying all ``labels``."""

    def purge(self, labels: Mapping[str, str]) -> None:
        """Remove everything carrying ``labels`` (last-resort cleanup, not a check)."""

    def remove_image(self, ref: str) -> None:
        """Remove one image if it exists."""


class DockerBackDoor:
    def __init__(self, base_url: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=base_url, version="auto")
        self._errors = docker.errors

    def container(self, name: str) -> dict[str, Any] | None:
        try:
            data = self.client.api.inspect_container(name)
        except self._errors.NotFound:
            return None
        return {
            "labels": data["Config"].get("Labels") or {},
            "status": data["State"]["Status"],
            "exit_code": data["State"].get("ExitCode"),
            "image": data["Config"].get("Image"),
        }

    def network(self, name: str) -> dict[str, Any] | None:
        try:
            data = self.client.api.inspect_network(name)
        except self._errors.NotFound:
            return None
        return {"labels": data.get("Labels") or {}, "internal": bool(data.get("Internal"))}

    def image(self, ref: str) -> dict[str, Any] | None:
        try:
            data = self.client.api.inspect_image(ref)
        except self._errors.NotFound:
            return None
        return {"labels": (data.get("Config") or {}).get("Labels") or {}, "tags": data.get("RepoTags") or []}

    def labelled(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        filters = {"label": _label_list(labels)}
        return {
            "containers": [c["Names"][0].lstrip("/") for c in self.client.api.containers(all=True, filters=filters)],
            "networks": [n["Name"] for n in self.client.api.networks(filters=filters)],
            "images": [i["Id"] for i in self.client.api.images(filters=filters)],
        }

    def purge(self, labels: Mapping[str, str]) -> None:
        filters = {"label": _label_list(labels)}
        for c in self.client.api.containers(all=True, filters=filters):
            self.client.api.remove_container(c["Id"], force=True)
        for n in self.client.api.networks(filters=filters):
            self.client.api.remove_network(n["Id"])
        for i in self.client.api.images(filters=filters):
            self.client.api.remove_image(i["Id"], force=True)

    def remove_image(self, ref: str) -> None:
        try:
            self.client.api.remove_image(ref, force=True)
        except self._errors.NotFound:
            pass


class PodmanBackDoor:
    def __init__(self, base_url: str) -> None:
        import podman

        self.client = podman.PodmanClient(base_url=base_url)
        self._errors = podman.errors

    def container(self, name: str) -> dict[str, Any] | None:
        try:
            data = self.client.containers.get(name).attrs
        except self._errors.NotFound:
            return None
        return {
            "labels": data["Config"].get("Labels") or {},
            "status": data["State"]["Status"],
            "exit_code": data["State"].get("ExitCode"),
            "image": data.get("ImageName"),
        }

    def network(self, name: str) -> dict[str, Any] | None:
        try:
            data = self.client.networks.get(name).attrs
        except self._errors.NotFound:
            return None
        return {"labels": data.get("labels") or {}, "internal": bool(data.get("internal"))}

    def image(self, ref: str) -> dict[str, Any] | None:
        try:
            data = self.client.images.get(ref).attrs
        except (self._errors.ImageNotFound, self._errors.NotFound):
            return None
        return {"labels": data.get("Labels") or {}, "tags": data.get("RepoTags") or []}

    def _list(self, path: str, label: str, **params: Any) -> list[dict[str, Any]]:
        # One label per query (Podman 4.3 finds no image given two); callers intersect.
        for _ in range(3):
            response = self.client.api.get(path, params={**params, "filters": json.dumps({"label": [label]})})
            # Podman fails a listing when an image goes away while it lists; ask again.
            if not (response.status_code == 500 and "image not known" in response.text):
                break
        response.raise_for_status()
        return response.json() or []

    def _matching(self, path: str, labels: Mapping[str, str], labels_key: str, **params: Any) -> list[dict[str, Any]]:
        first = _label_list(labels)[0]
        found = self._list(path, first, **params)
        return [item for item in found if all((item.get(labels_key) or {}).get(k) == v for k, v in labels.items())]

    def labelled(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        return {
            "containers": [c["Names"][0] for c in self._matching("/containers/json", labels, "Labels", all=True)],
            "networks": [n["name"] for n in self._matching("/networks/json", labels, "labels")],
            "images": [i["Id"] for i in self._matching("/images/json", labels, "Labels")],
        }

    def purge(self, labels: Mapping[str, str]) -> None:
        for c in self._matching("/containers/json", labels, "Labels", all=True):
            self.client.api.delete(f"/containers/{c['Id']}", params={"force": True, "v": True})
        for n in self._matching("/networks/json", labels, "labels"):
            self.client.api.delete(f"/networks/{n['name']}", params={"force": True})
        for i in self._matching("/images/json", labels, "Labels"):
            self.client.api.delete(f"/images/{i['Id']}", params={"force": True})

    def remove_image(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, force=True)
        except (self._errors.ImageNotFound, self._errors.NotFound):
            pass


class MemoryBackDoor:
    """The in-memory double's dicts are its storage; read them directly."""

    def __init__(self, runtime: InMemoryRuntime) -> None:
        self.runtime = runtime

    def _find_container(self, name: str) -> Any:
        return next((c for c in self.runtime.containers.values() if name in (c.info.name, c.info.id)), None)

    def container(self, name: str) -> dict[str, Any] | None:
        found = self._find_container(name)
        if found is None:
            return None
        return {"labels": dict(found.info.labels), "status": found.info.status, "exit_code": found.info.exit_code, "image": found.spec.image}

    def network(self, name: str) -> dict[str, Any] | None:
        found = next((n for n in self.runtime.networks.values() if name in (n.name, n.id)), None)
        return None if found is None else {"labels": dict(found.labels), "internal": found.internal}

    def image(self, ref: str) -> dict[str, Any] | None:
        if not self.runtime.image_exists(ref):
            return None
        found = self.runtime.inspect_image(ref)
        return {"labels": dict(found.labels), "tags": list(found.tags)}

    def labelled(self, labels: Mapping[str, str]) -> dict[str, list[str]]:
        def match(have: Mapping[str, str]) -> bool:
            return all(have.get(k) == v for k, v in labels.items())

        return {
            "containers": [c.info.name for c in self.runtime.containers.values() if match(c.info.labels)],
            "networks": [n.name for n in self.runtime.networks.values() if match(n.labels)],
            "images": [i.id for i in self.runtime.images.values() if match(i.labels)],
        }

    def purge(self, labels: Mapping[str, str]) -> None:
        self.runtime.remove_labelled(labels)

    def remove_image(self, ref: str) -> None:
        if self.runtime.image_exists(ref):
            self.runtime.remove_image(ref, force=True)

"""Image names and the recipe of the local base image.

Real users build on public bases (``python:3.12-slim``); machines without a
registry make their own base with debootstrap. Every Dockerfile bottle ships
takes the base as ``ARG BASE`` so both work.
"""

from __future__ import annotations

import hashlib

import msgspec

DEFAULT_BASE_IMAGE = "localhost/bottle-base:bookworm"
BASE_ARG = "BASE"
LABEL_IMAGE_KIND = "io.bottle.image"

SIDECAR_IMAGES = ("guard", "egress-proxy", "git-gate", "supervise")
# The sidecars whose images this version builds; the others join as they land.
SHIPPED_SIDECARS = ("guard", "egress-proxy", "git-gate", "supervise")


def sidecar_image_tag(role: str, version: str) -> str:
    """The local tag of a sidecar image, ``localhost/bottle-<role>:<version>``."""
    if role not in SIDECAR_IMAGES:
        raise ValueError(f"unknown sidecar {role!r}; expected one of {', '.join(SIDECAR_IMAGES)}")
    return f"localhost/bottle-{role}:{version}"


class BaseImageRecipe(msgspec.Struct, frozen=True):
    """How ``bottle images bootstrap`` makes the base image."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3", "ca-certificates")
    tag: str = DEFAULT_BASE_IMAGE

    def cache_name(self) -> str:
        """File name of the cached rootfs tarball; changes whenever the rootfs would."""
        key = "\0".join((self.suite, self.mirror, self.variant, *sorted(self.include)))
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return f"rootfs-{self.suite}-{self.variant}-{digest}.tar.gz"

    def debootstrap_argv(self, target: str) -> list[str]:
        """The debootstrap command line that builds this rootfs into ``target``."""
        argv = ["debootstrap", f"--variant={self.variant}"]
        if self.include:
            argv.append("--include=" + ",".join(self.include))
        argv += [self.suite, target, self.mirror]
        return argv


# Paths inside a fresh rootfs that only make the image bigger.
ROOTFS_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists")

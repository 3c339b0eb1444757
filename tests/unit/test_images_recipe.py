"""The base image recipe: the cache name follows what the rootfs contains."""

import pytest

from bottle.core.images import BaseImageRecipe, sidecar_image_tag


def test_cache_name_changes_with_contents_only():
    a = BaseImageRecipe()
    assert a.cache_name() == BaseImageRecipe(include=("ca-certificates", "python3")).cache_name()
    assert a.cache_name() != BaseImageRecipe(include=("python3",)).cache_name()
    assert a.cache_name() != BaseImageRecipe(suite="trixie").cache_name()
    assert a.cache_name() == BaseImageRecipe(tag="other:tag").cache_name()


def test_debootstrap_argv():
    argv = BaseImageRecipe().debootstrap_argv("/tmp/r")
    assert argv == ["debootstrap", "--variant=minbase", "--include=python3,ca-certificates", "bookworm",
                    "/tmp/r", "http://deb.debian.org/debian"]


def test_sidecar_tags():
    assert sidecar_image_tag("guard", "0.1.0") == "localhost/bottle-guard:0.1.0"
    with pytest.raises(ValueError, match="unknown sidecar"):
        sidecar_image_tag("agent", "0.1.0")

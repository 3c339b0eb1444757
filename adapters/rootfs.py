"""Make a root filesystem tarball with debootstrap, cached on the host.

This is the "doing" half of ``bottle images bootstrap``; the recipe (what to
install, where the cache file is named) comes from ``bottle.core.images``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from bottle.core.images import ROOTFS_PRUNE, BaseImageRecipe
from bottle.ports.errors import BottleError, InputError
from bottle.ports.runtime import ProgressEvent

Progress = Callable[[ProgressEvent], None]


class RootfsFailed(BottleError):
    """debootstrap or tar failed; the message carries their last output lines."""


def cached_rootfs(recipe: BaseImageRecipe, cache_dir: str, *, refresh: bool = False,
                  on_progress: Progress | None = None) -> str:
    """Return the path of the recipe's rootfs tarball, building it if missing.

    A partial build never lands in the cache: the tarball is written under a
    temporary name and renamed only when complete.
    """
    cache = Path(cache_dir)
    target = cache / recipe.cache_name()
    if target.exists() and not refresh:
        _say(on_progress, f"using cached rootfs {target}")
        return str(target)
    if os.geteuid() != 0:
        raise InputError(
            "debootstrap needs root to build the base rootfs",
            hint="run `sudo bottle images bootstrap`, or pass --tarball with a rootfs you already have",
        )
    if shutil.which("debootstrap") is None:
        raise InputError(
            "debootstrap is not installed",
            hint="apt-get install debootstrap (or pass --tarball with an existing rootfs tarball)",
        )
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bottle-rootfs-", dir=cache))
    try:
        rootfs = work / "rootfs"
        _run_streaming(recipe.debootstrap_argv(str(rootfs)), on_progress, "debootstrap")
        for rel in ROOTFS_PRUNE:
            for entry in (rootfs / rel).glob("*"):
                if entry.is_file() and entry.name != "lock":
                    entry.unlink()
        _say(on_progress, "packing rootfs")
        partial = work / "rootfs.tar.gz"
        with open(partial, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            gz = subprocess.run(["gzip", "-1"], stdin=tar.stdout, stdout=out, stderr=subprocess.PIPE)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or gz.returncode != 0:
                raise RootfsFailed("packing the rootfs failed: " + gz.stderr.decode(errors="replace")[-300:])
        os.replace(partial, target)
        return str(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_streaming(argv: list[str], on_progress: Progress | None, what: str) -> None:
    tail: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        _say(on_progress, line)
    if proc.wait() != 0:
        raise RootfsFailed(
            f"{what} exited with {proc.returncode}: " + " | ".join(tail[-5:]),
            hint="check that the Debian mirror is reachable and the disk has space",
        )


def _say(on_progress: Progress | None, message: str) -> None:
    if on_progress is not None:
        on_progress(ProgressEvent(message))

"""``bottle images``: make the base image, build sidecar images, list what bottle made."""

from __future__ import annotations

import click

import os

from bottle.cli.app import AppState, bottle_version
from bottle.cli.progress import progress
from bottle.core.images import (
    DEFAULT_BASE_IMAGE,
    LABEL_IMAGE_KIND,
    SHIPPED_SIDECARS,
    BaseImageRecipe,
    sidecar_image_tag,
)
from bottle.core.naming import LABEL_MANAGED

# Tags sidecar images carry instead of the package version: lets a test run
# or a pinned deployment use images of its own.
SIDECAR_VERSION_ENV = "BOTTLE_SIDECAR_VERSION"
LABEL_VERSION = "io.bottle.version"


def sidecar_version() -> str:
    """The tag of the sidecar images this bottle runs: ``$BOTTLE_SIDECAR_VERSION`` or the package version."""
    return os.environ.get(SIDECAR_VERSION_ENV) or bottle_version()


def _runtime(state: AppState):
    from bottle.cli.wiring import resolve_runtime  # noqa: PLC0415

    container = state.get_container()
    resolve_runtime(container, state.runtime)
    return container.runtime()


@click.group(short_help="Build or bootstrap the images bottle needs.")
def images() -> None:
    """Make and list the images bottle runs.

    On a machine that can pull images, base images come from a registry as
    usual. Where none is reachable, `bottle images bootstrap` makes the base
    from Debian's packages; every Dockerfile bottle ships takes the base as
    the build argument BASE, so both ways work.
    """


@images.command("bootstrap")
@click.option("--tag", default=DEFAULT_BASE_IMAGE, show_default=True, help="Tag of the base image to make.")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite to bootstrap.")
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True, help="Debian mirror.")
@click.option("--tarball", type=click.Path(exists=True, dir_okay=False),
              help="Import this rootfs tarball instead of running debootstrap.")
@click.option("--refresh", is_flag=True, help="Rebuild the cached rootfs even if one exists.")
@click.option("--force", is_flag=True, help="Import again even if the engine already has the tag.")
@click.pass_obj
def bootstrap(state: AppState, tag: str, suite: str, mirror: str, tarball: str | None,
              refresh: bool, force: bool) -> None:
    """Make the local base image with debootstrap and import it into the engine.

    The rootfs (Debian minbase plus python3 and ca-certificates) is cached
    under the user cache dir, so importing it into a second engine takes
    seconds. Needs root for debootstrap, not for the import: rootless Podman
    gets the same tarball through its own API socket.

    \b
    Examples:
      sudo bottle --runtime docker images bootstrap
      BOTTLE_PODMAN_URL=unix:///run/user/1000/podman/podman.sock \\
        bottle --runtime podman images bootstrap --tarball ~/.cache/bottle/rootfs-...tar.gz
    """
    import platformdirs  # noqa: PLC0415

    from bottle.adapters.rootfs import cached_rootfs  # noqa: PLC0415

    runtime = _runtime(state)
    if runtime.image_exists(tag) and not (force or refresh):
        click.echo(f"{runtime.name}: {tag} already present (use --force to import again)")
        return
    recipe = BaseImageRecipe(suite=suite, mirror=mirror, tag=tag)
    if tarball is None:
        with progress(f"bootstrapping Debian {suite} rootfs") as report:
            tarball = cached_rootfs(recipe, platformdirs.user_cache_dir("bottle"), refresh=refresh,
                                    on_progress=report)
    with progress(f"importing {tag} into {runtime.name}") as report:
        info = runtime.import_image(tarball, tag, on_progress=report)
    click.echo(f"{runtime.name}: {tag} ready ({info.id[:19]})")


@images.command("build")
@click.option("--base", default=DEFAULT_BASE_IMAGE, show_default=True,
              help="Base image the sidecar images build on (any Debian-like image with python3).")
@click.option("--force", is_flag=True, help="Build even if the images already exist.")
@click.argument("roles", nargs=-1, type=click.Choice(SHIPPED_SIDECARS))
@click.pass_obj
def build(state: AppState, base: str, force: bool, roles: tuple[str, ...]) -> None:
    """Build the sidecar images (guard, egress proxy) in the selected engine.

    Their Python dependencies are downloaded as wheels by the host's pip
    (cached under the user cache dir) and installed offline in the build,
    so the build itself needs no package index. ROLES limits the build to
    some of the images.
    """
    runtime = _runtime(state)
    built = build_sidecar_images(runtime, base=base, version=sidecar_version(), roles=roles, force=force)
    if not built:
        click.echo(f"{runtime.name}: sidecar images {sidecar_version()} already present (use --force to build again)")
    for tag in built:
        click.echo(f"{runtime.name}: {tag} ready")


def build_sidecar_images(
    runtime,  # type: ignore[no-untyped-def]
    *,
    base: str = DEFAULT_BASE_IMAGE,
    version: str,
    roles: tuple[str, ...] = (),
    force: bool = False,
    cache_dir: str | None = None,
) -> list[str]:
    """Build the sidecar images of ``roles`` (default: all shipped) tagged ``version``; return the tags built.

    Images that exist are skipped unless ``force``. Progress goes to stderr.
    """
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import platformdirs  # noqa: PLC0415

    from bottle.ports.errors import InputError  # noqa: PLC0415
    from bottle.sidecars._wheels import sidecar_build_contexts  # noqa: PLC0415

    wanted = [r for r in (roles or SHIPPED_SIDECARS)
              if force or not runtime.image_exists(sidecar_image_tag(r, version))]
    if not wanted:
        return []
    if not runtime.image_exists(base):
        raise InputError(
            f"the base image {base} is not in {runtime.name}",
            hint=f"make it with `bottle --runtime {runtime.name} images bootstrap`, or pull a public base and pass --base",
        )
    built = []
    work = tempfile.mkdtemp(prefix="bottle-sidecar-build-")
    try:
        with progress("preparing the sidecar build context") as report:
            builds = sidecar_build_contexts(
                os.path.join(work, "context"), cache_dir=cache_dir or platformdirs.user_cache_dir("bottle"),
                roles=wanted, on_progress=report,
            )
        for item in builds:
            tag = sidecar_image_tag(item.role, version)
            with progress(f"building {tag} in {runtime.name}") as report:
                runtime.build_image(
                    item.request(tag, base, {LABEL_MANAGED: "true", LABEL_IMAGE_KIND: item.role, LABEL_VERSION: version}),
                    on_progress=report,
                )
            built.append(tag)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return built


@images.command("ls")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def ls(state: AppState, fmt: str) -> None:
    """List the images bottle built or imported in the selected engine."""
    runtime = _runtime(state)
    found = runtime.list_images({LABEL_MANAGED: "true"})
    if runtime.image_exists(DEFAULT_BASE_IMAGE) and not any(DEFAULT_BASE_IMAGE in i.tags for i in found):
        found.insert(0, runtime.inspect_image(DEFAULT_BASE_IMAGE))
    rows = [
        {"tags": list(i.tags), "id": i.id, "kind": i.labels.get(LABEL_IMAGE_KIND, "base"),
         "size_mb": round(i.size / 1e6, 1)}
        for i in found
    ]
    if fmt == "json":
        import json  # noqa: PLC0415

        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no bottle images in {runtime.name}; run `bottle images bootstrap` then `bottle images build`")
        return
    for row in rows:
        click.echo(f"{', '.join(row['tags']) or '<untagged>':50} {row['kind']:14} {row['size_mb']:>8} MB")


__all__ = ["images", "bottle_version", "sidecar_version"]

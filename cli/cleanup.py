"""``bottle cleanup``: remove what bottles left behind, found by label."""

from __future__ import annotations

import click

from bottle.cli.app import AppState


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command("cleanup", short_help="Remove what stopped or crashed bottles left behind (by label).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed and remove nothing.")
@click.pass_obj
def cleanup(state: AppState, dry_run: bool) -> None:
    """Remove every container, network and image labelled io.bottle.managed
    whose bottle is not running, and the state of those bottles.

    A bottle counts as running while its launcher process lives (it may be
    half-way through a launch) or, for bottles with no state on this host,
    while any of its containers runs. State marked preserved (a pending
    `bottle resume`) is kept. Shared images (sidecars, agent images) stay:
    `bottle images ls` lists them.
    """
    from bottle.cli.ls import state_facts  # noqa: PLC0415
    from bottle.cli.wiring import resolve_runtime  # noqa: PLC0415
    from bottle.core.lifecycle import select_cleanup  # noqa: PLC0415
    from bottle.core.naming import LABEL_MANAGED  # noqa: PLC0415
    from bottle.ports.errors import NotFound, RuntimeFailure  # noqa: PLC0415

    container = state.get_container()
    resolve_runtime(container, state.runtime)
    runtime = container.runtime()
    store = container.state_store()
    managed = {LABEL_MANAGED: "true"}
    plan = select_cleanup(
        runtime.list_containers(managed),
        runtime.list_networks(managed),
        runtime.list_images(managed),
        state_facts(store, runtime.name),
    )
    verb = "would remove" if dry_run else "removed"
    problems: list[str] = []
    if not dry_run:
        for kind, names, remove in (
            ("container", plan.containers, lambda n: runtime.remove_container(n, force=True)),
            ("network", plan.networks, runtime.remove_network),
            ("image", plan.images, lambda n: runtime.remove_image(n, force=True)),
            ("state", plan.states, store.remove_bottle),
        ):
            for name in names:
                try:
                    remove(name)
                except NotFound:
                    continue
                except (RuntimeFailure, OSError) as exc:
                    problems.append(f"{kind} {name}: {exc}")
    for kind, names in (("container", plan.containers), ("network", plan.networks), ("image", plan.images)):
        for name in names:
            click.echo(f"{verb} {kind} {name}")
    for identity in plan.states:
        click.echo(f"{verb} state of {identity} ({store.host_path(identity)})")
    for identity, why in plan.kept:
        click.echo(f"kept {identity}: {why}")
    if plan.empty():
        click.echo(f"nothing to clean up in {runtime.name}")
    else:
        click.echo(
            f"{runtime.name}: {verb} {_count(len(plan.containers), 'container')}, "
            f"{_count(len(plan.networks), 'network')}, {_count(len(plan.images), 'image')} "
            f"and the state of {_count(len(plan.states), 'bottle')}"
        )
    for problem in problems:
        click.echo(f"error: could not remove {problem}", err=True)
    if problems:
        raise click.exceptions.Exit(1)

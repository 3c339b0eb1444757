"""``bottle resume IDENTITY``: relaunch a bottle whose state was kept, as the same identity."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from bottle.cli.app import AppState, manifest_option
from bottle.ports.errors import InputError

if TYPE_CHECKING:
    from bottle.core.manifest import Route
    from bottle.ports.state import StateStore


def _manifest_from_sources(sources: tuple[str, ...], explicit: str | None):  # type: ignore[no-untyped-def]
    """The manifest as the bottle was launched with: each recorded source in order (later wins)."""
    from bottle.cli.manifest_files import _explicit, read_source  # noqa: PLC0415
    from bottle.core.manifest_load import load_manifest  # noqa: PLC0415

    layers = []
    for path in sources:
        if not os.path.isfile(path):
            raise InputError(
                f"the manifest {path} this bottle was started with is gone",
                hint="put it back, or pass the manifest that declares the agent with --manifest",
            )
        layers.append([read_source(path)])
    if explicit:
        layers.append(_explicit(explicit))
    return load_manifest(layers)


@click.command("resume", short_help="Relaunch a bottle whose state was kept, by its identity.")
@click.argument("identity")
@click.option("-y", "--yes", is_flag=True, help="Launch without the y/N preflight question.")
@click.option("-v", "--verbose", is_flag=True, help="Print each launch step and the timings.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@manifest_option
@click.pass_obj
def resume(state: AppState, identity: str, yes: bool, verbose: bool, command: tuple[str, ...]) -> int:
    """Relaunch bottle IDENTITY from its recorded state.

    Same identity, agent, project and runtime as before, the per-bottle
    Dockerfile of an approved capability change, and the agent's home (its
    transcript) as it was left.
    """
    from bottle.adapters.local.proposal_desk import restore_transcript  # noqa: PLC0415
    from bottle.cli.start import launch_agent  # noqa: PLC0415
    from bottle.core.identity import parse_identity  # noqa: PLC0415
    from bottle.core.state import DOCKERFILE, METADATA, TRANSCRIPT_DIR, decode_metadata  # noqa: PLC0415

    identity = parse_identity(identity)
    store = state.get_container().state_store()
    data = store.read(identity, METADATA)
    if data is None:
        raise InputError(
            f"no state of bottle {identity} is kept here ({store.host_path(identity)})",
            hint="`bottle ls` lists the bottles with state; a bottle's state is kept only while a change is pending",
        )
    metadata = decode_metadata(data, store.host_path(identity, METADATA))
    if not os.path.isdir(metadata.cwd):
        raise InputError(
            f"the project directory {metadata.cwd} of bottle {identity} does not exist any more",
            hint="restore it, or start a new bottle with `bottle start`",
        )
    if state.runtime is None:
        state.runtime = metadata.runtime
    manifest = _manifest_from_sources(metadata.manifest_sources, state.manifest)
    offered = manifest.agent(metadata.agent_name).bottle.supervise_token_refs
    hosts, routes = approved_in(store, identity, offered)
    if store.exists(identity, TRANSCRIPT_DIR):
        # The conversation as it was when a capability change stopped the agent.
        restore_transcript(store, identity)
    return launch_agent(
        state, manifest, metadata.agent_name, metadata.cwd, metadata.copy_cwd, command,
        yes=yes, verbose=verbose, identity=identity, per_bottle_dockerfile=store.exists(identity, DOCKERFILE),
        approved_hosts=hosts, approved_routes=routes,
    )


def approved_in(
    store: StateStore, identity: str, offered: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], tuple[Route, ...]]:
    """(hosts, routes) that applied proposals of bottle ``identity`` added (``proposals.approved_changes``).

    ``offered``: the manifest's ``supervise_token_refs`` now (None: do not
    check). A route whose credential the manifest no longer offers is
    dropped, with a warning: taking a token_ref off the list withdraws it.
    """
    from bottle.adapters.local.proposal_queue import HostQueue  # noqa: PLC0415
    from bottle.cli.display import printable  # noqa: PLC0415
    from bottle.core.manifest import Route  # noqa: PLC0415
    from bottle.core.proposals import approved_changes, is_offered, supervise_settings  # noqa: PLC0415

    proposals, refused = HostQueue(store, identity).scan()
    for refusal in refused:
        # Decided proposals come from the host's own copy; a rewritten filing is only worth a warning.
        click.echo(f"warning: {identity}/{refusal.name}: {printable(refusal.reason)}", err=True)
    hosts, routes = approved_changes(proposals)
    if offered is not None:
        settings = supervise_settings(offered)
        kept = []
        for route in routes:
            if is_offered(route.token_ref, settings):
                kept.append(route)
            else:
                click.echo(
                    f"warning: the approved route to {printable(route.upstream)} is dropped: the manifest no longer "
                    f"offers {printable(route.token_ref)} in supervise_token_refs",
                    err=True,
                )
        routes = tuple(kept)
    return hosts, tuple(Route(r.upstream, r.token_ref, r.auth_scheme) for r in routes)

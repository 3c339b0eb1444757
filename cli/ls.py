"""``bottle ls``: the bottles this user has, from the engine's labels and the state directory."""

from __future__ import annotations

import click

from bottle.cli.app import AppState


def state_facts(store, runtime_name: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    """``StateFacts`` of every identity with state (of ``runtime_name`` only, when given)."""
    import msgspec  # noqa: PLC0415

    from bottle.cli.launcher import launcher_alive  # noqa: PLC0415
    from bottle.core.lifecycle import LAUNCHER_RECORD, LauncherRecord, StateFacts  # noqa: PLC0415
    from bottle.core.state import METADATA, PRESERVE_MARKER, StateCorrupt, decode_metadata  # noqa: PLC0415

    facts = {}
    for identity in store.identities():
        metadata = None
        data = store.read(identity, METADATA)
        if data is not None:
            try:
                metadata = decode_metadata(data, store.host_path(identity, METADATA))
            except StateCorrupt:
                metadata = None
        if runtime_name is not None and metadata is not None and metadata.runtime != runtime_name:
            continue
        alive = False
        record = store.read(identity, LAUNCHER_RECORD)
        if record is not None:
            try:
                alive = launcher_alive(msgspec.json.decode(record, type=LauncherRecord))
            except msgspec.DecodeError:
                alive = False
        facts[identity] = StateFacts(identity, metadata, store.exists(identity, PRESERVE_MARKER), alive)
    return facts


@click.command("ls", short_help="List bottles: running, starting, preserved or left behind.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def ls(state: AppState, fmt: str) -> None:
    """List the bottles of the selected engine and those with state on this host.

    STATUS is running (the agent runs), starting (its launcher is still
    bringing it up), preserved (state kept for `bottle resume`) or stopped
    (something is left behind: `bottle cleanup` removes it).
    """
    import msgspec  # noqa: PLC0415

    from bottle.cli.wiring import resolve_runtime  # noqa: PLC0415
    from bottle.core.lifecycle import ls_rows, render_ls  # noqa: PLC0415
    from bottle.core.naming import LABEL_MANAGED  # noqa: PLC0415
    from bottle.ports.errors import EngineUnreachable  # noqa: PLC0415

    container = state.get_container()
    resolve_runtime(container, state.runtime)
    runtime = container.runtime()
    note = None
    try:
        containers = runtime.list_containers({LABEL_MANAGED: "true"})
    except EngineUnreachable as exc:
        containers = []
        note = f"{runtime.name} does not answer ({exc.message}); showing state only"
    rows = ls_rows(containers, state_facts(container.state_store()), container.clock().now())
    if fmt == "json":
        click.echo(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
    else:
        click.echo(render_ls(rows), nl=False)
    if note:
        click.echo(f"note: {note}", err=True)

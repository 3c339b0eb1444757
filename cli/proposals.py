"""``bottle proposals ls|show|approve|reject``: decide what agents asked for, from scripts.

The same desk as ``bottle dashboard`` (``bottle.adapters.local.proposal_desk``).
``approve`` returns only once the change is in force: for a host, once the
guard has confirmed it loaded the new policy; for a capability change, once
the bottle is going down with its state kept (then ``bottle resume``).
Exit status: 0 done, 1 the change failed (and was rolled back), 2 refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bottle.cli.app import AppState
from bottle.cli.display import json_text, one_line, printable

if TYPE_CHECKING:
    from bottle.adapters.local.proposal_desk import ProposalDesk
    from bottle.core.proposals import Proposal


def agent_stopper(state: AppState, store: Any) -> Any:
    """A ``stop_agent(identity)`` that stops the agent container on the engine the bottle runs on."""

    def stop(identity: str) -> None:
        from bottle.cli.wiring import resolve_runtime  # noqa: PLC0415
        from bottle.core.naming import ROLE_AGENT, resource_name  # noqa: PLC0415
        from bottle.core.state import METADATA, decode_metadata  # noqa: PLC0415
        from bottle.ports.errors import NotFound  # noqa: PLC0415

        data = store.read(identity, METADATA)
        runtime_name = decode_metadata(data, store.host_path(identity, METADATA)).runtime if data else state.runtime
        container = state.get_container()
        resolve_runtime(container, state.runtime or runtime_name)
        try:
            container.runtime().stop_container(resource_name(ROLE_AGENT, identity), timeout=10)
        except NotFound:
            pass  # already gone: its launcher tears down and keeps the state

    return stop


def make_desk(state: AppState, *, confirm_timeout: float | None = None) -> ProposalDesk:
    from bottle.adapters.local.proposal_desk import DEFAULT_CONFIRM_TIMEOUT, ProposalDesk  # noqa: PLC0415

    container = state.get_container()
    store = container.state_store()
    return ProposalDesk(
        store,
        container.clock(),
        confirm_timeout=confirm_timeout or DEFAULT_CONFIRM_TIMEOUT,
        stop_agent=agent_stopper(state, store),
    )


def current_files(desk: ProposalDesk, identity: str) -> tuple[tuple[str, ...], str]:
    """(the allowlist, the per-bottle Dockerfile) a bottle has now, for previews."""
    from bottle.adapters.local.proposal_desk import POLICY_FILE  # noqa: PLC0415
    from bottle.core.egress_policy import decode_policy  # noqa: PLC0415
    from bottle.core.state import DOCKERFILE  # noqa: PLC0415

    allow: tuple[str, ...] = ()
    data = desk.store.read(identity, POLICY_FILE)
    if data is not None:
        try:
            allow = decode_policy(data).allow
        except ValueError:
            allow = ()
    dockerfile = (desk.store.read(identity, DOCKERFILE) or b"").decode("utf-8", "replace")
    return allow, dockerfile


def preview(desk: ProposalDesk, proposal: Proposal) -> str:
    from bottle.core.proposals import change_preview  # noqa: PLC0415

    allow, dockerfile = current_files(desk, proposal.identity)
    return change_preview(proposal, allow=allow, dockerfile=dockerfile)


def _row(p: Proposal) -> list[str]:
    cells = [p.ref, p.kind, p.status, p.filed_at[:19].replace("T", " "), p.describe(), p.reason]
    return [one_line(c, 60 if i == 5 else None) for i, c in enumerate(cells)]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines) + "\n"


def _encode(value: Any) -> str:
    """JSON for a terminal or a script: control characters escaped by the encoder, DEL/C1/bidi by ``json_text``."""
    import msgspec  # noqa: PLC0415

    return json_text(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def _proposal_json(p: Proposal) -> dict[str, Any]:
    import msgspec  # noqa: PLC0415

    data: dict[str, Any] = msgspec.to_builtins(p)
    data["ref"] = p.ref
    return data


@click.group("proposals", short_help="List, approve or reject what agents proposed (supervise).")
def proposals() -> None:
    """Proposals filed by agents through the supervise sidecar, across every bottle on this host."""


@proposals.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Include decided proposals, not only pending ones.")
@click.option("--bottle", "identity", metavar="IDENTITY", help="Only this bottle's proposals.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def ls(state: AppState, show_all: bool, identity: str | None, fmt: str) -> None:
    """List pending proposals (REF is IDENTITY/N), and files in a queue that were refused, with why."""
    desk = make_desk(state)
    found, refused = desk.scan([identity] if identity else None)
    shown = [p for p in found if show_all or p.status == "pending"]
    if fmt == "json":
        click.echo(_encode({
            "proposals": [_proposal_json(p) for p in shown],
            "refused": [{"identity": r.identity, "file": r.name, "reason": r.reason} for r in refused],
        }))
        return
    if shown:
        click.echo(_table([_row(p) for p in shown], ["REF", "KIND", "STATUS", "FILED", "CHANGE", "REASON"]), nl=False)
    else:
        click.echo("no pending proposals" if not show_all else "no proposals")
    for r in refused:
        click.echo(f"refused {one_line(r.identity)}/{one_line(r.name)}: {one_line(r.reason)}", err=True)


@proposals.command("show")
@click.argument("ref")
@click.option("--bottle", "identity", metavar="IDENTITY")
@click.pass_obj
def show(state: AppState, ref: str, identity: str | None) -> None:
    """One proposal with its reason and the change it makes (allowlist delta or Dockerfile diff)."""
    desk = make_desk(state)
    who, number = desk.resolve(ref, identity)
    p = desk.queue(who).get(number)
    # Everything below may hold what the agent wrote (or a decision file it could not write but
    # that quotes it): shown through printable(), never raw.
    click.echo(printable(f"{p.ref}  {p.kind}  {p.status}  filed {p.filed_at}"))
    click.echo(f"reason: {printable(p.reason)}")
    if p.decided_by:
        click.echo(printable(f"decided by {p.decided_by} at {p.decided_at}" + (f": {p.note}" if p.note else "")))
    if p.error:
        click.echo(f"error: {printable(p.error)}")
    click.echo(printable(preview(desk, p)))


def _outcome(outcome: Any, fmt: str) -> None:
    if fmt == "json":
        data = _proposal_json(outcome.proposal)
        data["message"] = outcome.message
        data["seconds"] = round(outcome.seconds, 3)
        click.echo(_encode(data))
    else:
        click.echo(printable(outcome.message))
    if not outcome.ok:
        raise click.exceptions.Exit(1)


@proposals.command("approve")
@click.argument("ref")
@click.option("--note", default="", help="Why, for the agent and the audit log.")
@click.option(
    "--grant", default="lifetime", show_default=True, metavar="lifetime|once|DURATION",
    help="How long an approved host stays allowed: the bottle's lifetime, one request, or e.g. 30m, 2h.",
)
@click.option(
    "--build-network", is_flag=True,
    help="Capability changes: let the image build's RUN steps use the engine's default network "
    "(e.g. to reach a package mirror). Without it the build has no network at all.",
)
@click.option("--bottle", "identity", metavar="IDENTITY", help="The bottle, when REF is only a number.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the guard to confirm [default: 10].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def approve(
    state: AppState, ref: str, note: str, grant: str, build_network: bool, identity: str | None,
    timeout: float | None, fmt: str,
) -> None:
    """Approve proposal REF (IDENTITY/N) and apply it; returns once it is in force.

    A capability change's new image is built at `bottle resume` with no
    network unless --build-network is given; read its Dockerfile first
    (`bottle proposals show REF`).
    """
    from bottle.adapters.local.proposal_desk import default_decider  # noqa: PLC0415
    from bottle.core.proposals import parse_grant  # noqa: PLC0415

    desk = make_desk(state, confirm_timeout=timeout)
    who, number = desk.resolve(ref, identity)
    outcome = desk.approve(
        who, number, decided_by=default_decider(), note=note, grant=parse_grant(grant), build_network=build_network
    )
    _outcome(outcome, fmt)


@proposals.command("reject")
@click.argument("ref")
@click.option("--note", default="", help="Why, for the agent and the audit log.")
@click.option("--bottle", "identity", metavar="IDENTITY", help="The bottle, when REF is only a number.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def reject(state: AppState, ref: str, note: str, identity: str | None, fmt: str) -> None:
    """Reject proposal REF (IDENTITY/N); nothing changes in the bottle."""
    from bottle.adapters.local.proposal_desk import default_decider  # noqa: PLC0415

    desk = make_desk(state)
    who, number = desk.resolve(ref, identity)
    _outcome(desk.reject(who, number, decided_by=default_decider(), note=note), fmt)

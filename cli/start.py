"""``bottle start AGENT``: plan a bottle (and, in a later version, launch it)."""

from __future__ import annotations

import os

import click

from bottle.cli.app import AppState, manifest_option, bottle_version
from bottle.cli.manifest_files import load_manifest_files, secret_presence
from bottle.cli.wiring import resolve_runtime
from bottle.core.identity import new_identity
from bottle.core.plan import ImageSettings, LaunchPlan, LaunchRequest, plan_launch
from bottle.core.plan_render import render_json, render_text
from bottle.ports.errors import InputError


def _invoking_user() -> str | None:
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def build_plan(
    state: AppState, agent_name: str, cwd: str, copy_cwd: bool, command: tuple[str, ...]
) -> tuple[LaunchPlan, str | None]:
    """Gather the inputs of ``plan_launch`` from the host and call it.

    Returns the plan and a note to show when no engine answered.
    """
    container = state.get_container()
    manifest = load_manifest_files(cwd, state.manifest)
    agent = manifest.agent(agent_name)
    choice = resolve_runtime(container, state.runtime)
    identity = new_identity(agent.name, container.randomness())
    home = os.path.expanduser("~")
    request = LaunchRequest(
        agent=agent.name,
        cwd=cwd,
        runtime=choice.name,
        state_dir=container.state_store().host_path(identity),
        images=ImageSettings(version=bottle_version()),
        copy_cwd=copy_cwd,
        command=command or None,
        user=_invoking_user(),
        home=home,
    )
    presence = secret_presence(agent, container.secret_source(), home)
    note = None if choice.reachable else f"no container engine answered; planned for {choice.name}"
    return plan_launch(agent, request, identity, presence), note


@click.command("start", short_help="Start an agent in a new bottle (--dry-run shows the plan).")
@click.argument("agent")
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=".",
    show_default=True,
    help="Project directory the agent works in (mounted at /workspace).",
)
@click.option("--copy-cwd", is_flag=True, help="Copy the project into the image instead of mounting it.")
@click.option("--dry-run", is_flag=True, help="Print the launch plan and touch nothing.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="How --dry-run prints the plan.",
)
@click.option("-y", "--yes", is_flag=True, help="Launch without the y/N preflight question.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@manifest_option
@click.pass_obj
def start(
    state: AppState,
    agent: str,
    cwd: str,
    copy_cwd: bool,
    dry_run: bool,
    fmt: str,
    yes: bool,
    command: tuple[str, ...],
) -> None:
    """Start AGENT in a new bottle, against the project in --cwd.

    Everything after `--` replaces the agent's command:
    `bottle start claude -- claude --help`.
    """
    plan, note = build_plan(state, agent, cwd, copy_cwd, command)
    if note:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        if fmt == "json":
            click.echo(render_json(plan), nl=False)
            for warning in plan.warnings:
                click.echo(f"warning: {warning}", err=True)
        else:
            click.echo(render_text(plan), nl=False)
        return
    if plan.missing_secrets:
        raise InputError(
            f"cannot start `{plan.agent}`: missing secret(s) {', '.join(plan.missing_secrets)}",
            hint="set them on the host (export NAME=... or create the file), then start again; "
            "`bottle info " + plan.agent + "` lists what the agent needs",
        )
    raise InputError(
        "this version of bottle can only plan a launch: use `bottle start AGENT --dry-run`",
        hint=f"`bottle start {plan.agent} --dry-run` shows everything the launch will create",
    )

"""``bottle start AGENT``: plan a bottle, launch it, run the agent, take it down again.

``--dry-run`` prints the plan and touches nothing (no engine needed). A real
start asks y/N on the plan in words (``-y`` skips; without a terminal to ask
on it refuses unless ``-y``), then hands the plan to the launcher.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from bottle.cli.app import AppState, manifest_option
from bottle.cli.images import sidecar_version
from bottle.cli.manifest_files import load_manifest_files, secret_presence
from bottle.cli.wiring import resolve_runtime
from bottle.core.identity import new_identity
from bottle.core.plan import ImageSettings, LaunchPlan, LaunchRequest, plan_launch, secret_uses, with_approved
from bottle.core.plan_render import render_json, render_text
from bottle.ports.errors import InputError

if TYPE_CHECKING:
    from bottle.cli.launcher import TeardownReport
    from bottle.core.lifecycle import Step, Users
    from bottle.core.manifest import Agent, Manifest, Route
    from bottle.core.state import BottleMetadata
    from bottle.ports.runtime import ContainerRuntime, EngineInfo, ProgressEvent


def _invoking_user() -> str | None:
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def build_plan(
    state: AppState, agent_name: str, cwd: str, copy_cwd: bool, command: tuple[str, ...]
) -> tuple[LaunchPlan, str | None]:
    """The plan ``--dry-run`` prints, from the host alone (no engine is asked anything).

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
        images=ImageSettings(version=sidecar_version()),
        copy_cwd=copy_cwd,
        command=command or None,
        user=_invoking_user(),
        home=home,
        interactive=not command,
    )
    presence = secret_presence(agent, container.secret_source(), home)
    note = None if choice.reachable else f"no container engine answered; planned for {choice.name}"
    return plan_launch(agent, request, identity, presence), note


# -- a real launch ----------------------------------------------------------------


def _sudo_ids() -> tuple[int | None, int | None]:
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    return (int(uid) if uid.isdigit() else None, int(gid) if gid.isdigit() else None)


def choose_users_for(info: EngineInfo, cwd: str) -> Users:
    """``lifecycle.choose_users`` with this process's facts; refuses root on a rootless engine."""
    from bottle.core.lifecycle import choose_users  # noqa: PLC0415

    euid = os.geteuid()
    if info.rootless and euid == 0:
        raise InputError(
            f"root cannot launch bottles on the rootless {info.runtime} engine at {info.address}",
            hint="run bottle as the user who owns that engine (its containers cannot read root's files)",
        )
    st = os.stat(cwd)
    sudo_uid, sudo_gid = _sudo_ids()
    return choose_users(
        euid=euid,
        egid=os.getegid(),
        rootless_engine=info.rootless,
        sudo_uid=sudo_uid,
        sudo_gid=sudo_gid,
        cwd_owner=(st.st_uid, st.st_gid),
    )


def read_secrets(agent: Agent, state: AppState, home: str) -> dict[str, str]:
    """Every secret the agent needs, by token_ref; refuses (naming them, never a value) if any is missing."""
    source = state.get_container().secret_source()
    presence = secret_presence(agent, source, home)
    missing = [ref for ref, present in presence.items() if not present]
    if missing:
        raise InputError(
            f"cannot start `{agent.name}`: missing secret(s) {', '.join(missing)}",
            hint="set them on the host (export NAME=... or create the file), then start again; "
            f"`bottle info {agent.name}` lists what the agent needs",
        )
    values = {}
    for use in secret_uses(agent):
        name = use.name
        if use.kind == "file" and (name == "~" or name.startswith("~/")):
            name = home + name[1:]
        values[use.ref] = source.read(use.kind, name)
    return values


def egress_policy_bytes(agent: Agent, identity: str) -> bytes:
    """The egress policy file the guard and the egress proxy load (no secret in it)."""
    from bottle.core.egress_policy import encode_policy, policy_document  # noqa: PLC0415
    from bottle.core.routing import build_route_table  # noqa: PLC0415

    egress = agent.bottle.egress
    table = build_route_table(agent.bottle.egress_proxy.routes)
    return encode_policy(
        policy_document(egress.allow, table, allow_private=egress.allow_private, identity=identity, agent=agent.name)
    )


class StepDisplay:
    """One status line on a terminal; plain lines with ``--verbose``; silence otherwise."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.live = sys.stderr.isatty() and not verbose
        self._shown = False
        self._started = time.monotonic()

    def step(self, step: Step, total: int) -> None:
        text = f"[{step.index}/{total}] {step.describe()}"
        if self.verbose:
            click.echo(f"bottle: {time.monotonic() - self._started:6.2f}s done {text}", err=True)
        elif self.live:
            sys.stderr.write("\r\033[K" + text[:120])
            sys.stderr.flush()
            self._shown = True

    def say(self, text: str) -> None:
        self.clear()
        click.echo(f"bottle: {text}", err=True)

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False


@contextmanager
def _build_progress(title: str) -> Iterator[Callable[[ProgressEvent], None]]:
    from bottle.cli.progress import progress  # noqa: PLC0415

    with progress(title) as report:
        yield report


def _cache_dir() -> str:
    import platformdirs  # noqa: PLC0415

    return platformdirs.user_cache_dir("bottle")


def run_bottle(
    state: AppState,
    runtime: ContainerRuntime,
    plan: LaunchPlan,
    agent: Agent,
    metadata: BottleMetadata,
    users: Users,
    secrets: dict[str, str],
    *,
    interactive: bool,
    verbose: bool,
    resume: bool = False,
) -> int:
    """Launch ``plan``, run the agent, tear down; return the agent's exit code."""
    from bottle.cli.launcher import INTERRUPT_HOOK_ENV, Interrupts, LaunchInputs, Launcher  # noqa: PLC0415

    container = state.get_container()
    display = StepDisplay(verbose)
    hook = os.environ.get(INTERRUPT_HOOK_ENV, "")
    inputs = LaunchInputs(
        plan=plan,
        metadata=metadata,
        users=users,
        secrets=secrets,
        env_values=dict(agent.env),
        policy=egress_policy_bytes(agent, plan.identity),
        resume=resume,
        supervise_token_refs=agent.bottle.supervise_token_refs,
    )
    interrupts = Interrupts()
    interrupts.on_ignored = lambda: display.say("removing the bottle; please wait")
    launcher = Launcher(
        runtime,
        container.state_store(),
        container.clock(),
        inputs,
        interrupts=interrupts,
        say=display.say,
        on_step=display.step,
        on_build=_build_progress,
        cache_dir=_cache_dir(),
        interrupt_after=int(hook) if hook.isdigit() else None,
    )
    report: TeardownReport | None = None
    started = time.monotonic()
    with interrupts:
        try:
            launcher.launch()
            display.clear()
            if verbose:
                display.say(f"{plan.identity} up in {time.monotonic() - started:.2f}s")
            code = launcher.run(interactive=interactive)
        finally:
            display.clear()
            report = launcher.teardown()
            _report_teardown(report, display, verbose)
    return code


def _report_teardown(report: TeardownReport, display: StepDisplay, verbose: bool) -> None:
    for problem in report.problems:
        display.say(f"could not remove {problem}")
    if report.problems:
        display.say("run `bottle cleanup` to remove what is left")
    if report.resume_hint:
        display.say(f"state kept for a pending change; continue with `{report.resume_hint}`")
    if verbose:
        display.say(f"{report.identity} down in {report.seconds:.2f}s")


def engine_facts(state: AppState) -> tuple[ContainerRuntime, EngineInfo]:
    """The selected engine and what it says about itself (raises ``EngineUnreachable``)."""
    container = state.get_container()
    resolve_runtime(container, state.runtime)
    runtime = container.runtime()
    return runtime, runtime.info()


def check_can_ask(yes: bool) -> None:
    if not yes and not sys.stdin.isatty():
        raise InputError(
            "refusing to start a bottle without confirmation: there is no terminal to ask on",
            hint="pass -y to start without the y/N question",
        )


def project_copy_note(cwd: str, copy_cwd: bool) -> str | None:
    """With ``--copy-cwd``: what the copy leaves out of the image (credential files, credentials in .git/config)."""
    if not copy_cwd:
        return None
    from bottle.adapters.local.project_copy import survey_project  # noqa: PLC0415

    summary = survey_project(cwd).summary()
    return f"--copy-cwd: {summary}" if summary else None


def preflight(plan: LaunchPlan, yes: bool, *notes: str | None) -> None:
    """Show the plan in words and ask y/N (``-y`` skips it); warnings and notes are shown either way."""
    if yes:
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        for note in notes:
            if note:
                click.echo(f"note: {note}", err=True)
        return
    click.echo(render_text(plan), nl=False, err=True)
    for note in notes:
        if note:
            click.echo(f"note: {note}", err=True)
    if not click.confirm("Start this bottle?", default=False, err=True):
        raise click.exceptions.Exit(1)


def launch_agent(
    state: AppState,
    manifest: Manifest,
    agent_name: str,
    cwd: str,
    copy_cwd: bool,
    command: tuple[str, ...],
    *,
    yes: bool,
    verbose: bool,
    identity: str | None = None,
    per_bottle_dockerfile: bool = False,
    approved_hosts: tuple[str, ...] = (),
    approved_routes: tuple[Route, ...] = (),
) -> int:
    """Plan and run a bottle of ``agent_name``; ``identity`` given means a resume.

    ``approved_hosts`` and ``approved_routes`` (a resume: what applied
    proposals added) join the agent's allowlist and routes for everything
    this launch reads from it: the secrets, the plan, the policy file.
    """
    from bottle.core.state import BottleMetadata  # noqa: PLC0415

    container = state.get_container()
    agent = with_approved(manifest.agent(agent_name), approved_hosts, approved_routes)
    home = os.path.expanduser("~")
    secrets = read_secrets(agent, state, home)
    check_can_ask(yes)
    runtime, info = engine_facts(state)
    users = choose_users_for(info, cwd)
    resuming = identity is not None
    identity = identity or new_identity(agent.name, container.randomness())
    interactive = not command and sys.stdin.isatty() and sys.stdout.isatty()
    request = LaunchRequest(
        agent=agent.name,
        cwd=cwd,
        runtime=runtime.name,
        state_dir=container.state_store().host_path(identity),
        images=ImageSettings(version=sidecar_version()),
        copy_cwd=copy_cwd,
        command=command or None,
        user=users.agent,
        home=home,
        per_bottle_dockerfile=per_bottle_dockerfile,
        approved_hosts=approved_hosts,
        approved_routes=approved_routes,
        sidecar_user=users.sidecars,
        userns=users.userns,
        limits_supported=not (info.rootless and info.cgroup_version in ("v1", "1")),
        interactive=interactive,
    )
    plan = plan_launch(agent, request, identity, {ref: True for ref in secrets})
    preflight(plan, yes, users.note, project_copy_note(cwd, copy_cwd))
    metadata = BottleMetadata(
        identity=identity,
        agent_name=agent.name,
        cwd=cwd,
        copy_cwd=copy_cwd,
        started_at=container.clock().now(),
        runtime=runtime.name,
        manifest_sources=manifest.sources,
    )
    return run_bottle(
        state, runtime, plan, agent, metadata, users, secrets,
        interactive=interactive, verbose=verbose, resume=resuming,
    )


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
@click.option("-v", "--verbose", is_flag=True, help="Print each launch step and the timings.")
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
    verbose: bool,
    command: tuple[str, ...],
) -> int | None:
    """Start AGENT in a new bottle, against the project in --cwd.

    Without a command the agent's own command runs with this terminal
    attached. Everything after `--` replaces it and runs without a terminal;
    bottle then exits with that command's exit code:
    `bottle start claude -y -- claude --help`.
    """
    if dry_run:
        plan, note = build_plan(state, agent, cwd, copy_cwd, command)
        for line in (note, project_copy_note(cwd, copy_cwd)):
            if line:
                click.echo(f"note: {line}", err=True)
        if fmt == "json":
            click.echo(render_json(plan), nl=False)
            for warning in plan.warnings:
                click.echo(f"warning: {warning}", err=True)
        else:
            click.echo(render_text(plan), nl=False)
        return None
    manifest = load_manifest_files(cwd, state.manifest)
    return launch_agent(state, manifest, agent, cwd, copy_cwd, command, yes=yes, verbose=verbose)


__all__: Sequence[str] = ("start", "build_plan", "launch_agent", "run_bottle")

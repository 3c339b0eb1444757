"""``bottle info AGENT``: what an agent is declared to get, and which secrets are there."""

from __future__ import annotations

import os
from typing import Any

import click

from bottle.cli.app import AppState, manifest_option
from bottle.cli.manifest_files import load_manifest_files, secret_presence
from bottle.core import routing, seccomp
from bottle.core.manifest import Agent
from bottle.core.tokenref import parse_token_ref


def agent_info(agent: Agent, presence: dict[str, bool]) -> dict[str, Any]:
    """The facts ``info`` shows, as plain data (the JSON form)."""
    bottle = agent.bottle
    table = routing.build_route_table(bottle.egress_proxy.routes)

    def ref(text: str) -> str:
        return str(parse_token_ref(text))

    return {
        "name": agent.name,
        "description": agent.description,
        "source": agent.source,
        "image": agent.image,
        "dockerfile": agent.dockerfile_path(),
        "command": list(agent.command) if agent.command is not None else None,
        "env": sorted(agent.env),
        "egress": {
            "allow": list(bottle.egress.allow),
            "effective_allow": list(routing.effective_allowlist(bottle.egress.allow, table).patterns),
            "extra_ca_file": bottle.egress.extra_ca_file,
        },
        "routes": [
            {
                "upstream": r.upstream,
                "auth_scheme": r.auth_scheme,
                "token_ref": r.token_ref,
                "present": presence.get(r.token_ref, False),
            }
            for r in table.routes
        ],
        "git": [
            {
                "name": g.name,
                "upstream": g.upstream,
                "token_ref": ref(g.token_ref),
                "present": presence.get(ref(g.token_ref), False),
                "protected": list(g.branches.protected),
                "allow": list(g.branches.allow),
            }
            for g in bottle.git
        ],
        "supervise": bottle.supervise,
        "limits": {"memory": bottle.limits.memory, "pids": bottle.limits.pids},
        "read_only_root": bottle.read_only_root,
        "syscalls": _syscalls(bottle.syscalls.allow),
        "instructions_lines": len(agent.instructions.splitlines()),
    }


def _syscalls(allow: tuple[str, ...]) -> dict[str, Any]:
    plan = seccomp.syscall_plan(allow)
    return {
        "policy": plan.name,
        "digest": plan.digest,
        "allowed": list(plan.allowed),
        "refused": [g.name for g in seccomp.DEFAULT_POLICY.groups if g.name not in plan.allowed],
    }


def _text(info: dict[str, Any]) -> str:
    lines = [f"agent:        {info['name']}"]
    if info["description"]:
        lines.append(f"description:  {info['description']}")
    lines.append(f"declared in:  {info['source']}")
    if info["image"]:
        lines.append(f"image:        {info['image']}")
    else:
        lines.append(f"dockerfile:   {info['dockerfile']}")
    lines.append(f"command:      {' '.join(info['command']) if info['command'] else '(the image default)'}")
    if info["env"]:
        lines.append(f"env:          {', '.join(info['env'])}")
    egress = info["egress"]
    lines.append(f"egress allow: {', '.join(egress['allow']) if egress['allow'] else '(none)'}")
    extra = [p for p in egress["effective_allow"] if p not in egress["allow"]]
    if extra:
        lines.append(f"              + route hosts: {', '.join(extra)}")
    if egress["extra_ca_file"]:
        lines.append(f"extra CA:     {egress['extra_ca_file']}")
    if info["routes"]:
        lines.append("routes:")
        for r in info["routes"]:
            state = "present" if r["present"] else "MISSING"
            lines.append(f"  {r['upstream']}  {r['auth_scheme']}  {r['token_ref']} ({state})")
    else:
        lines.append("routes:       (none)")
    if info["git"]:
        lines.append("git remotes:")
        for g in info["git"]:
            state = "present" if g["present"] else "MISSING"
            rules = ""
            if g["protected"]:
                rules += f"  protected: {', '.join(g['protected'])}"
            if g["allow"]:
                rules += f"  allow: {', '.join(g['allow'])}"
            lines.append(f"  {g['name']}  {g['upstream']}  {g['token_ref']} ({state}){rules}")
    else:
        lines.append("git remotes:  (none)")
    lines.append(f"supervise:    {'on' if info['supervise'] else 'off'}")
    limits = info["limits"]
    lines.append(
        f"limits:       memory {limits['memory'] or 'unlimited'}, pids {limits['pids'] or 'unlimited'}"
        + (", read-only root" if info["read_only_root"] else "")
    )
    calls = info["syscalls"]
    lines.append(f"syscalls:     {calls['policy']}, refuses {', '.join(calls['refused'])}")
    if calls["allowed"]:
        lines.append(f"              WEAKENED: {', '.join(calls['allowed'])} allowed back (bottle.syscalls.allow)")
    if info["instructions_lines"]:
        lines.append(f"instructions: {info['instructions_lines']} lines")
    return "\n".join(lines) + "\n"


@click.command("info", short_help="Show what an agent is declared to get.")
@click.argument("agent")
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=".",
    show_default=True,
    help="Project directory whose manifest is read.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@manifest_option
@click.pass_obj
def info(state: AppState, agent: str, cwd: str, fmt: str) -> None:
    """Show AGENT's image, egress allowlist, routes and git remotes, and which secrets are present."""
    manifest = load_manifest_files(cwd, state.manifest)
    declared = manifest.agent(agent)
    presence = secret_presence(declared, state.get_container().secret_source(), os.path.expanduser("~"))
    data = agent_info(declared, presence)
    if fmt == "json":
        import msgspec  # noqa: PLC0415

        click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())
    else:
        click.echo(_text(data), nl=False)

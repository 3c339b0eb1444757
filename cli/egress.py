"""``bottle egress check``: the verdict the egress chain would give one request, without any engine.

The policy is built from the agent's manifest entry exactly as the guard
loads it, and the verdict comes from the same core functions the sidecars
call (``bottle.core.egress_policy.decide_chain``). The route secrets are read
from the host (as ``start`` would) so the scan for the bottle's own secrets
is the real one; they are never printed. Exit 0 when the request would go
out, 1 when it would be refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bottle.cli.app import AppState, manifest_option
from bottle.ports.errors import InputError


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise click.BadParameter(f"{text!r} is not 'Name: value'", param_hint="'-H'")
    return name.strip(), value.strip()


def _read_body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        path = os.path.expanduser(data[1:])
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise InputError(f"cannot read the body file {path}: {exc.strerror}", hint="-d @FILE reads a file") from None
    return data.encode("utf-8", "surrogateescape")


def route_secrets(agent: Any, source: Any, home: str) -> tuple[dict[str, str], list[str]]:
    """Token slot -> secret for every route secret that is present; and the token_refs that are not."""
    from bottle.core.plan import secret_uses  # noqa: PLC0415
    from bottle.core.routing import build_route_table  # noqa: PLC0415
    from bottle.ports.errors import BottleError  # noqa: PLC0415

    table = build_route_table(agent.bottle.egress_proxy.routes)
    uses = {u.ref: u for u in secret_uses(agent)}
    secrets: dict[str, str] = {}
    missing: list[str] = []
    for slot, ref in table.slots().items():
        use = uses.get(ref)
        if use is None:
            missing.append(ref)
            continue
        name = use.name
        if use.kind == "file" and (name == "~" or name.startswith("~/")):
            name = home + name[1:]
        try:
            secrets[slot] = source.read(use.kind, name)
        except BottleError:
            missing.append(ref)
    return secrets, missing


def check_result(
    agent: Any,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    *,
    extra_allow: tuple[str, ...] = (),
    allow_private: tuple[str, ...] = (),
    secrets: dict[str, str] | None = None,
    missing: list[str] | None = None,
) -> dict[str, Any]:
    """The verdict as plain data (the JSON form). Raises ``InputError`` for a bad URL or pattern."""
    from bottle.core.egress_policy import EgressPolicy, EgressRequest, access_hint, decide_chain  # noqa: PLC0415
    from bottle.core.routing import build_route_table  # noqa: PLC0415

    bottle = agent.bottle
    table = build_route_table(bottle.egress_proxy.routes)
    try:
        policy = EgressPolicy.build(
            [*bottle.egress.allow, *extra_allow],
            table,
            allow_private=[*bottle.egress.allow_private, *allow_private],
            secrets=secrets or {},
            agent=agent.name,
        )
    except ValueError as exc:
        raise InputError(str(exc), hint="check --allow / --allow-private and the agent's bottle.egress.allow") from None
    try:
        request = EgressRequest.from_url(method, url, headers, body)
    except ValueError as exc:
        raise InputError(str(exc), hint="give a full URL such as https://api.example.com/v1/x") from None
    via_proxy = bool(table.routes)
    verdict = decide_chain(request, policy, via_egress_proxy=via_proxy)
    redact = policy.scanner.redact
    result: dict[str, Any] = {
        "verdict": "allow" if verdict.allow else "deny",
        "rule": verdict.rule,
        "reason": redact(verdict.reason),
        "decided_by": verdict.stage,
        "path": ["egress-proxy", "guard"] if via_proxy else ["guard"],
        "request": {"method": request.method, "url": redact(request.url())},
        "findings": [f.describe() for f in verdict.findings],
        "route": verdict.route or None,
        "credential_injected": verdict.injected,
        "secrets_missing": list(missing or []),
    }
    if not verdict.allow:
        host = request.host
        result["hint"] = access_hint(verdict.rule, host=redact(host), agent=agent.name)
    return result


def _text(result: dict[str, Any]) -> str:
    lines = [f"{result['verdict']}  {result['rule']}  (decided by the {result['decided_by'].replace('-', ' ')})"]
    lines.append(f"request: {result['request']['method']} {result['request']['url']}")
    lines.append(f"reason:  {result['reason']}")
    if result["route"]:
        injected = "the real credential is injected" if result["credential_injected"] else "credential not checked"
        lines.append(f"route:   {result['route']} ({injected})")
    if result.get("hint"):
        lines.append(f"to get access: {result['hint']}")
    for ref in result["secrets_missing"]:
        lines.append(f"note: {ref} is not set here, so requests were not scanned for that secret")
    return "\n".join(lines) + "\n"


@click.group("egress", short_help="Try the egress policy of an agent.")
def egress() -> None:
    """Inspect what an agent's egress chain (egress proxy and guard) lets out."""


@egress.command("check")
@click.argument("agent")
@click.argument("url")
@click.option("-X", "--request", "method", metavar="METHOD", help="HTTP method [default: GET, or POST with -d].")
@click.option("-H", "--header", "headers", multiple=True, metavar="'Name: value'", help="A request header (repeatable).")
@click.option("-d", "--data", metavar="BODY", help="Request body; @FILE reads a file, @- reads stdin.")
@click.option("--allow", "extra_allow", multiple=True, metavar="HOST", help="Also allow this host pattern (repeatable).")
@click.option(
    "--allow-private",
    multiple=True,
    metavar="NET",
    help="Treat this non-public address or network as explicitly allowed (repeatable).",
)
@click.option("--no-secrets", is_flag=True, help="Do not read the route secrets from this host.")
@click.option(
    "--cwd",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=".",
    show_default=True,
    help="Project directory whose manifest is read.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@manifest_option
@click.pass_context
def check(
    ctx: click.Context,
    agent: str,
    url: str,
    method: str | None,
    headers: tuple[str, ...],
    data: str | None,
    extra_allow: tuple[str, ...],
    allow_private: tuple[str, ...],
    no_secrets: bool,
    cwd: str,
    fmt: str,
) -> None:
    """Would AGENT's bottle let a request to URL out? Exit 0 if allowed, 1 if denied.

    Uses no container engine and no network: the verdict comes from the
    policy the guard would load and the same decision functions it runs.
    """
    from bottle.cli.manifest_files import load_manifest_files  # noqa: PLC0415

    state = ctx.ensure_object(AppState)
    parsed_headers = [_parse_header(h) for h in headers]
    body = _read_body(data)
    manifest = load_manifest_files(cwd, state.manifest)
    declared = manifest.agent(agent)
    secrets: dict[str, str] = {}
    missing: list[str] = []
    if not no_secrets and declared.bottle.egress_proxy.routes:
        secrets, missing = route_secrets(declared, state.get_container().secret_source(), os.path.expanduser("~"))
    result = check_result(
        declared,
        method or ("POST" if body is not None else "GET"),
        url,
        parsed_headers,
        body,
        extra_allow=extra_allow,
        allow_private=allow_private,
        secrets=secrets,
        missing=missing,
    )
    if fmt == "json":
        import msgspec  # noqa: PLC0415

        click.echo(msgspec.json.format(msgspec.json.encode(result), indent=2).decode())
    else:
        click.echo(_text(result), nl=False)
    ctx.exit(0 if result["verdict"] == "allow" else 1)

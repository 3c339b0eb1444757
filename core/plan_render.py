"""Renderings of a ``LaunchPlan``: words for the y/N preflight, JSON for ``--format=json``.

Both show only what the plan holds, so neither can show a secret value.
"""

from __future__ import annotations

import msgspec

from bottle.core import gitgate, naming, seccomp
from bottle.core.plan import ContainerPlan, EnvVar, LaunchPlan

__all__ = ["plan_to_json", "render_json", "render_text"]


def plan_to_json(plan: LaunchPlan) -> bytes:
    """Compact JSON: struct fields in declaration order, dict keys sorted."""
    return msgspec.json.encode(plan, order="deterministic")


def render_json(plan: LaunchPlan) -> str:
    """Indented JSON with a stable key order, ending in a newline."""
    return msgspec.json.format(plan_to_json(plan), indent=2).decode("utf-8") + "\n"


# Set in every container; the preflight has better things to show.
_UNREMARKABLE_ENV = frozenset({"BOTTLE_IDENTITY", "BOTTLE_ROLE"})
# Long values the preflight shows in words elsewhere (the git remotes).
_SHOWN_ELSEWHERE = {gitgate.CONFIG_ENV: "the git remotes above, as JSON"}


def _env_word(var: EnvVar) -> str:
    if var.source == "bottle":
        return f"{var.name}={var.value}"
    if var.source == "secret":
        return f"{var.name} (from {var.token_ref})"
    if var.source == "placeholder":
        return f"{var.name} (placeholder, not a secret)"
    return f"{var.name} (from the manifest)"


def _env_words(env: tuple[EnvVar, ...]) -> list[str]:
    # Variables bottle sets to one value (the four proxy spellings) read better grouped.
    words: list[str] = []
    grouped: dict[str, list[str]] = {}
    for var in env:
        if var.name in _UNREMARKABLE_ENV:
            continue
        if var.name in _SHOWN_ELSEWHERE:
            words.append(f"{var.name} ({_SHOWN_ELSEWHERE[var.name]})")
            continue
        if var.source == "bottle" and var.value is not None:
            if var.value not in grouped:
                grouped[var.value] = []
                words.append(var.value)
            grouped[var.value].append(var.name)
        else:
            words.append(_env_word(var))
    return [f"{'/'.join(grouped[w])}={w}" if w in grouped else w for w in words]


def _container_lines(container: ContainerPlan) -> list[str]:
    nets = []
    for attachment in container.networks:
        alias = f" as {', '.join(attachment.aliases)}" if attachment.aliases else ""
        nets.append(f"{attachment.network}{alias}")
    lines = [f"  {container.name}  [{container.role}]  {container.image}", f"      networks: {'; '.join(nets)}"]
    for mount in container.mounts:
        mode = "ro" if mount.read_only else "rw"
        lines.append(f"      mount: {mount.source} -> {mount.target} ({mode})")
    for word in _env_words(container.env):
        lines.append(f"      env: {word}")
    if container.secrets_file:
        lines.append(f"      secrets: copied in as {container.secrets_file} before it starts (not in its env)")
    if container.user:
        userns = f", user namespace {container.userns}" if container.userns else ""
        lines.append(f"      runs as: {container.user}{userns}")
    lines.append(f"      syscalls: {_syscalls_word(container.syscalls)}")
    return lines


def _syscalls_word(plan: seccomp.SyscallPlan) -> str:
    # 12 hex digits tell two profiles apart at a glance; the JSON has the whole digest.
    word = f"{plan.name} ({plan.digest[:19]})"
    if plan.allowed:
        word += f", WEAKENED: {', '.join(plan.allowed)} allowed back"
    return word


def _syscalls_line(plan: seccomp.SyscallPlan) -> str:
    refused = [g.name for g in seccomp.DEFAULT_POLICY.groups if g.name not in plan.allowed]
    line = f"syscalls:  {plan.name} refuses {', '.join(refused)}"
    if plan.allowed:
        line += f"; WEAKENED: {', '.join(plan.allowed)} allowed back by the manifest"
    return line


def render_text(plan: LaunchPlan) -> str:
    """The plan in words, as the y/N preflight shows it."""
    out: list[str] = []
    add = out.append
    add(f"bottle {plan.identity}: agent `{plan.agent}` on {plan.runtime}")
    if plan.description:
        add(f"  {plan.description}")
    add("")
    if plan.copy_cwd:
        add(f"project:   {plan.cwd} copied into the image at /workspace (changes stay in the bottle)")
    else:
        add(f"project:   {plan.cwd} mounted read-write at /workspace")
    add(f"image:     {plan.agent_image}")
    builds = [s for s in plan.images if s.action == "build"]
    for step in builds:
        source = step.dockerfile if step.dockerfile != "(generated)" else f"a generated layer with {step.context}"
        add(f"           build {step.tag} from {source}")
    add(f"command:   {' '.join(plan.command) if plan.command else '(the image default)'}")
    agent = plan.container(naming.ROLE_AGENT)
    if agent is not None:
        limits = []
        if agent.memory_bytes is not None:
            limits.append(f"memory {agent.memory_bytes // (1024 * 1024)} MiB")
        if agent.pids_limit is not None:
            limits.append(f"{agent.pids_limit} processes")
        limits.append(f"user {agent.user}, no capabilities, no new privileges")
        if agent.read_only_rootfs:
            limits.append("read-only root")
        add(f"limits:    {', '.join(limits)}")
    add("")
    chain = "agent -> egress-proxy -> guard -> internet" if plan.proxy.agent_proxy == naming.ROLE_EGRESS_PROXY else "agent -> guard -> internet"
    add(f"network:   the agent sits alone on an internal network; its HTTP goes {chain}")
    add(f"allowed:   {', '.join(plan.allowlist) if plan.allowlist else '(no hosts)'}")
    if plan.extra_ca_file:
        trusting = "the guard and the git gate" if plan.git_remotes else "the guard"
        add(f"extra CA:  {trusting} also trust {plan.extra_ca_file} upstream")
    if plan.routes:
        add("routes:    the egress proxy adds these credentials; the agent never sees them")
        for route in plan.routes:
            state = "present" if route.token_present else "MISSING"
            add(f"           {route.upstream}  {route.auth_scheme}  from {route.token_ref} ({state})")
    else:
        add("routes:    none (no credentials are brokered)")
    if plan.git_remotes:
        add("git:       clones, fetches and pushes go through the git gate (secret scan, branch rules);")
        add("           it alone holds the credentials and talks to these hosts itself")
        for remote in plan.git_remotes:
            state = "present" if remote.token_present else "MISSING"
            rules = [f"protected {', '.join(remote.protected or ('main', 'master'))}"]
            if remote.allow:
                rules.append(f"only {', '.join(remote.allow)}")
            rules.append(f"sent as user {remote.username}")
            add(f"           {remote.name}  {remote.upstream}  token {remote.token_ref} ({state}); {'; '.join(rules)}")
            for waiver in remote.allow_findings:
                add(f"             findings waived: {waiver.rule} in {waiver.path}")
    else:
        add("git:       no brokered remotes (git push has no way out)")
    add(f"supervise: {'on (the agent can propose changes; you approve them)' if plan.supervise else 'off'}")
    if agent is not None:
        add(_syscalls_line(agent.syscalls))
    if plan.claude:
        add("claude:    ANTHROPIC_BASE_URL set, placeholder credential, telemetry off")
    add("")
    add("containers:")
    for container in plan.containers:
        out.extend(_container_lines(container))
    add("networks:")
    for network in plan.networks:
        kind = "internal, no way out" if network.internal else "egress"
        add(f"  {network.name}  ({kind})")
    if plan.warnings:
        add("")
        add("warnings:")
        for warning in plan.warnings:
            add(f"  ! {warning}")
    return "\n".join(out) + "\n"

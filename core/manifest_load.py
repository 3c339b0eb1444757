"""Parse and merge manifest text into ``bottle.core.manifest`` types.

No file I/O here: the shell (``bottle.cli.manifest_files``) reads the files
and hands over ``ManifestText`` values; this module turns them into
``Agent`` structs or raises ``ManifestError`` naming the source, the field
path and what was expected.

Two formats:

- JSON: ``{"version": 1, "agents": {"NAME": {...agent fields...}}}``.
- Markdown agent file: YAML front matter between ``---`` lines holding
  ``name`` and the same agent fields; the body is the agent's instructions.

Merging: sources are grouped in layers (user, project, ``--manifest``);
a later layer replaces an earlier layer's agent of the same name whole.
Within one layer a name may be declared once.
"""

from __future__ import annotations

import json
import ipaddress
import re
import types
import urllib.parse
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

import msgspec
import yaml

from bottle.core import routing, seccomp
from bottle.core.errors import DOCUMENT, FRONT_MATTER, ManifestError, did_you_mean
from bottle.core.secretscan import BROKERED, LABELS
from bottle.core.manifest import (
    LOADER_FIELDS,
    RESERVED_AGENT_ENV,
    Agent,
    BottleConfig,
    Manifest,
    parse_memory,
)
from bottle.core.tokenref import parse_token_ref

__all__ = [
    "ANTHROPIC_HOST",
    "CLAUDE_AGENT_ENV",
    "ManifestText",
    "looks_like_secret",
    "load_manifest",
    "parse_json_manifest",
    "parse_markdown_agent",
    "parse_source",
    "redact_secrets",
]

MANIFEST_VERSION = 1
ANTHROPIC_HOST = "api.anthropic.com"
# Set by the launch plan when a route goes to ANTHROPIC_HOST.
CLAUDE_AGENT_ENV = frozenset(
    {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"}
)
LEGACY_BOTTLE_KEYS = ("tokens", "cred_proxy")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Scanner rules a manifest may waive in a git remote; a bottle's own
# brokered secrets are never waived.
WAIVABLE_RULES = tuple(sorted(kind for kind in LABELS if kind != BROKERED))
_MAX_NAME = 128
_MAX_PIDS = 4_194_304  # the kernel's pid_max ceiling
_INT64 = 2**63

# Known token shapes; a manifest value matching one is a secret pasted where
# a reference belongs. Messages name the shape, never the value.
_SECRET_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern))
    for label, pattern in (
        ("an Anthropic API key", r"sk-ant-[A-Za-z0-9_-]{10,}"),
        ("an API key", r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}"),
        ("a GitHub token", r"(?<![A-Za-z0-9])(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        ("a GitLab token", r"(?<![A-Za-z0-9])glpat-[A-Za-z0-9_-]{20,}"),
        ("a Slack token", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"),
        ("an AWS access key id", r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
        ("a Google API key", r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}"),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    )
)


def looks_like_secret(value: str) -> str | None:
    """What kind of secret ``value`` looks like (``"a GitHub token"``), or ``None``."""
    for label, pattern in _SECRET_SHAPES:
        if pattern.search(value):
            return label
    return None


def redact_secrets(text: str) -> str:
    """``text`` with every substring shaped like a known secret replaced by ``[redacted]``."""
    for _label, pattern in _SECRET_SHAPES:
        text = pattern.sub("[redacted]", text)
    return text


class ManifestText(msgspec.Struct, frozen=True):
    """One manifest source as read by the shell.

    ``source`` is how errors name it (its path); ``base_dir`` the directory
    that relative paths inside it resolve against; ``kind`` its format.
    """

    text: str
    source: str
    base_dir: str
    kind: Literal["json", "markdown"] = "json"


# -- field paths and descriptions -------------------------------------------


def _at(path: str, key: object) -> str:
    """Append a key or index to a field path: ``a.b``, ``a[2]``, ``a["odd key"]``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = str(key)
    if _PATH_KEY.match(text):
        return f"{path}.{text}" if path else text
    quoted = json.dumps(text if len(text) <= 60 else text[:57] + "...")
    return f"{path}[{quoted}]"


def _describe(typ: Any, plural: bool = False) -> str:
    """Say what a type expects, in a user's words."""
    if typ is str:
        return "strings" if plural else "a string"
    if typ is bool:
        return "booleans" if plural else "true or false"
    if typ is int:
        return "integers" if plural else "an integer"
    if typ is type(None):
        return "null"
    origin = get_origin(typ)
    if isinstance(typ, types.UnionType) or origin is Union:
        return " or ".join(_describe(a, plural) for a in get_args(typ))
    if origin in (tuple, list):
        return "lists" if plural else f"a list of {_describe(get_args(typ)[0], True)}"
    if origin is dict:
        return "objects" if plural else f"an object of {_describe(get_args(typ)[1], True)}"
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        return "objects" if plural else "an object"
    return str(typ)


def _got(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


# What a missing required field should hold, in a user's words.
_REQUIRED_FIELD_WORDS = {
    "name": "the agent's name (a string)",
    "upstream": "an https:// URL",
    "token_ref": "where the host keeps the secret: an env var name, 'env:NAME' or 'file:PATH'",
}


class _Obj(dict):  # type: ignore[type-arg]
    """A parsed JSON/YAML object that remembers keys it saw twice."""

    duplicates: list[object]

    def __init__(self) -> None:
        super().__init__()
        self.duplicates = []


def _json_object(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


class _FrontMatterLoader(yaml.SafeLoader):
    """Safe YAML that records duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _FrontMatterLoader, node: yaml.MappingNode) -> _Obj:
    loader.flatten_mapping(node)
    obj = _Obj()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            ) from None
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = loader.construct_object(value_node, deep=True)
    return obj


_FrontMatterLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


# -- structural checks ------------------------------------------------------


class _Checker:
    """Walks parsed data against the manifest types, failing at the first wrong field."""

    def __init__(self, source: str, kind: str = "json") -> None:
        self.source = source
        self.kind = kind
        # What an empty path means: the JSON document, or the front matter as a whole.
        self.root = FRONT_MATTER if kind == "markdown" else DOCUMENT

    def fail(self, path: str, problem: str, hint: str | None = None) -> NoReturn:
        raise ManifestError(self.source, path or self.root, problem, hint=hint)

    def check(self, value: object, typ: Any, path: str) -> None:
        origin = get_origin(typ)
        if isinstance(typ, types.UnionType) or origin is Union:
            args = get_args(typ)
            if value is None and type(None) in args:
                return
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                if value is None:
                    self.fail(path, f"expected {_describe(typ)}, got null")
                self.check(value, rest[0], path)
                return
            raise AssertionError(f"unsupported union {typ}")  # manifest types use only X | None
        if typ is str:
            if not isinstance(value, str):
                self.fail(path, f"expected a string, got {_got(value)}")
        elif typ is bool:
            if not isinstance(value, bool):
                self.fail(path, f"expected true or false, got {_got(value)}")
        elif typ is int:
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(path, f"expected an integer, got {_got(value)}")
            if not -_INT64 <= value < _INT64:
                self.fail(path, "expected an integer that fits in 64 bits")
        elif origin in (tuple, list):
            if not isinstance(value, list):
                self.fail(path, f"expected {_describe(typ)}, got {_got(value)}")
            item_type = get_args(typ)[0]
            for index, item in enumerate(value):
                self.check(item, item_type, _at(path, index))
        elif origin is dict:
            if not isinstance(value, dict):
                self.fail(path, f"expected {_describe(typ)}, got {_got(value)}")
            self.no_duplicates(value, path)
            value_type = get_args(typ)[1]
            for key, item in value.items():
                if not isinstance(key, str):
                    self.fail(path, f"expected names (strings) as keys, got {_got(key)} `{key!s:.40}`")
                self.check(item, value_type, _at(path, key))
        elif isinstance(typ, type) and issubclass(typ, msgspec.Struct):
            self.check_struct(value, typ, path)
        else:
            raise AssertionError(f"unsupported manifest type {typ}")

    def no_duplicates(self, value: dict[Any, Any], path: str, what: str = "key") -> None:
        duplicates = getattr(value, "duplicates", ())
        if duplicates:
            key = duplicates[0]
            self.fail(_at(path, key), f"{what} `{key!s:.60}` appears twice; expected each {what} once")

    def check_struct(
        self,
        value: object,
        typ: type[msgspec.Struct],
        path: str,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {_got(value)}")
        self.no_duplicates(value, path, what="field")
        fields = {f.encode_name: f for f in msgspec.structs.fields(typ) if f.name not in exclude}
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"expected field names (strings) as keys, got {_got(key)} `{key!s:.40}`")
            if key not in fields:
                if typ is BottleConfig and key in LEGACY_BOTTLE_KEYS:
                    self.fail(_at(path, key), *_legacy_recipe(key, value[key], self.kind))
                suggestion = did_you_mean(key, fields)
                problem = f"unknown field `{_shown(key):.60}`"
                if suggestion:
                    problem += f"; did you mean `{suggestion}`?"
                self.fail(_at(path, key), problem, hint=f"known fields here: {', '.join(fields)}")
        for key, field in fields.items():
            if field.required and key not in value:
                expected = _REQUIRED_FIELD_WORDS.get(key, _describe(field.type))
                self.fail(_at(path, key), f"missing; expected {expected}")
        for key, item in value.items():
            self.check(item, fields[key].type, _at(path, key))


# -- legacy keys ------------------------------------------------------------

_LEGACY_KIND_ROUTES = {
    "anthropic": ("https://api.anthropic.com", "x-api-key"),
    "claude": ("https://api.anthropic.com", "bearer"),
    "github": ("https://api.github.com", "bearer"),
    "openai": ("https://api.openai.com", "bearer"),
}


def _legacy_recipe(key: str, value: object, source_kind: str) -> tuple[str, str]:
    """(problem, hint) for a removed ``bottle`` key, with the equivalent routes spelled out."""
    routes: list[dict[str, str]] = []
    entries: list[object] = []
    if key == "cred_proxy" and isinstance(value, dict) and isinstance(value.get("routes"), list):
        entries = value["routes"]
    elif key == "tokens" and isinstance(value, list):
        entries = value
    elif key == "tokens" and isinstance(value, dict):
        entries = [{"kind": k, "token_ref": v} for k, v in value.items()]
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        legacy_kind = entry.get("kind")
        upstream, scheme = _LEGACY_KIND_ROUTES.get(legacy_kind if isinstance(legacy_kind, str) else "", ("", ""))
        if isinstance(entry.get("upstream"), str):
            upstream = entry["upstream"]
        if isinstance(entry.get("auth_scheme"), str):
            scheme = entry["auth_scheme"]
        ref = entry.get("token_ref", entry.get("env"))
        route = {
            "upstream": upstream or "https://HOST",
            "auth_scheme": scheme or "bearer",
            # Only a well-formed reference is repeated: anything else may be a pasted secret.
            "token_ref": ref if isinstance(ref, str) and _is_token_ref(ref) else "ENV_VAR_NAME",
        }
        routes.append(route)
    if not routes:
        routes = [{"upstream": "https://api.example.com", "auth_scheme": "bearer", "token_ref": "EXAMPLE_TOKEN"}]
    replacement = {"egress_proxy": {"routes": routes}}
    if source_kind == "markdown":
        recipe = yaml.safe_dump(replacement, sort_keys=False, default_flow_style=False).rstrip()
    else:
        recipe = json.dumps(replacement, indent=2)
    problem = (
        f"`bottle.{key}` was removed; declare each credential as a route under "
        "`bottle.egress_proxy.routes`"
    )
    hint = (
        f"replace `{key}` in the `bottle` block with:\n{recipe}\n"
        "(auth_scheme is bearer, x-api-key, basic or header:NAME; see docs/manifest.md#legacy-keys)"
    )
    return problem, hint


def _is_token_ref(text: str) -> bool:
    if looks_like_secret(text):
        return False
    try:
        parse_token_ref(text)
    except ValueError:
        return False
    return True


# -- semantic checks --------------------------------------------------------


def _shown(key: str) -> str:
    """A field name as an error shows it: control characters escaped, so the error stays one readable line."""
    return json.dumps(key, ensure_ascii=False)[1:-1]


def _check_name(checker: _Checker, name: str, path: str) -> None:
    if not name.strip():
        checker.fail(path, "expected a non-empty agent name")
    if _CONTROL.search(name):
        checker.fail(path, "expected an agent name without control characters")
    if len(name) > _MAX_NAME:
        checker.fail(path, f"expected an agent name of at most {_MAX_NAME} characters")


def _check_https_url(checker: _Checker, url: str, path: str, *, what: str) -> tuple[str, int | None, str]:
    """Validate an upstream URL without echoing parts that could hold a secret."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        checker.fail(path, f"expected an https:// URL of {what}")
    if parts.scheme.lower() != "https":
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        checker.fail(path, f"expected an https:// URL of {what}, got {got:.20}")
    if "@" in parts.netloc:
        checker.fail(
            path,
            "expected a URL without credentials in it",
            hint="put the credential in a token_ref (an env var name or file:PATH), never in the manifest",
        )
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        checker.fail(path, f"expected an https:// URL of {what} without a query or fragment")
    try:
        return routing.parse_upstream(url)
    except ValueError as exc:
        checker.fail(path, str(exc))


def _check_token_ref(checker: _Checker, ref: str, path: str) -> None:
    shape = looks_like_secret(ref)
    if shape:
        checker.fail(
            path,
            f"looks like {shape} itself; expected a reference to where the host keeps it",
            hint="write the name of an environment variable (ANTHROPIC_API_KEY) or file:PATH, and remove the secret from this file",
        )
    try:
        parse_token_ref(ref)
    except ValueError:
        # parse_token_ref's message quotes the text; it might be a pasted secret.
        checker.fail(path, "expected an environment variable name, 'env:NAME' or 'file:PATH'")


def _token_env_names(agent: Agent) -> set[str]:
    names = set()
    for ref in agent.token_refs():
        try:
            parsed = parse_token_ref(ref)
        except ValueError:
            continue
        if parsed.kind == "env":
            names.add(parsed.name)
    return names


def _validate_agent(checker: _Checker, agent: Agent, prefix: str) -> Agent:
    """Check what the types cannot say; return the agent with host patterns normalised."""
    at = lambda *keys: _join(prefix, *keys)  # noqa: E731
    if (agent.image is None) == (agent.dockerfile is None):
        both = agent.image is not None
        checker.fail(
            prefix,
            "expected exactly one of `image` and `dockerfile`, got both" if both
            else "expected `image` (an image reference) or `dockerfile` (a path), got neither",
        )
    if agent.image is not None and (not agent.image.strip() or re.search(r"\s", agent.image)):
        checker.fail(at("image"), "expected an image reference like 'localhost/my-agent:latest'")
    if agent.dockerfile is not None and (not agent.dockerfile.strip() or "\x00" in agent.dockerfile):
        checker.fail(at("dockerfile"), "expected a path to a Dockerfile, relative to this file")
    if agent.command is not None:
        if not agent.command:
            checker.fail(at("command"), "expected a non-empty list (omit it to keep the image's command)")
        for index, arg in enumerate(agent.command):
            shape = looks_like_secret(arg)
            if shape:
                checker.fail(at("command", index), f"looks like {shape}; secrets never go on the agent's command line")

    bottle = agent.bottle
    routes = bottle.egress_proxy.routes
    route_hosts: list[str] = []
    for index, route in enumerate(routes):
        host, _port, _prefix = _check_https_url(
            checker, route.upstream, at("bottle", "egress_proxy", "routes", index, "upstream"),
            what="the upstream API",
        )
        route_hosts.append(host.lower().rstrip("."))
        try:
            routing.validate_auth_scheme(route.auth_scheme)
        except ValueError as exc:
            checker.fail(at("bottle", "egress_proxy", "routes", index, "auth_scheme"), str(exc))
        _check_token_ref(checker, route.token_ref, at("bottle", "egress_proxy", "routes", index, "token_ref"))
    if routes:
        try:
            routing.build_route_table(routes)
        except ValueError as exc:
            checker.fail(at("bottle", "egress_proxy", "routes"), str(exc))

    allow: list[str] = []
    for index, pattern in enumerate(bottle.egress.allow):
        try:
            allow.append(routing.validate_host_pattern(pattern))
        except ValueError as exc:
            checker.fail(at("bottle", "egress", "allow", index), str(exc))
    for index, network in enumerate(bottle.egress.allow_private):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            checker.fail(
                at("bottle", "egress", "allow_private", index),
                "expected an IP address or network like '10.1.2.3' or '192.168.0.0/16'",
            )
    ca_file = bottle.egress.extra_ca_file
    if ca_file is not None and (not ca_file.strip() or "\x00" in ca_file):
        checker.fail(at("bottle", "egress", "extra_ca_file"), "expected a path to a PEM CA bundle")

    remote_names: set[str] = set()
    for index, remote in enumerate(bottle.git):
        if not _REMOTE_NAME.match(remote.name):
            checker.fail(
                at("bottle", "git", index, "name"),
                "expected a remote name of letters, digits, '.', '_' and '-'",
            )
        if remote.name in remote_names:
            checker.fail(at("bottle", "git", index, "name"), f"remote `{remote.name}` is declared twice")
        remote_names.add(remote.name)
        _host, _port, path = _check_https_url(
            checker, remote.upstream, at("bottle", "git", index, "upstream"), what="the repository"
        )
        if path.strip("/") == "":
            checker.fail(at("bottle", "git", index, "upstream"), "expected a repository URL with a path")
        _check_token_ref(checker, remote.token_ref, at("bottle", "git", index, "token_ref"))
        for rule in ("protected", "allow"):
            for j, pattern in enumerate(getattr(remote.branches, rule)):
                if not pattern.strip() or _CONTROL.search(pattern) or " " in pattern:
                    checker.fail(
                        at("bottle", "git", index, "branches", rule, j),
                        "expected a branch name or glob like 'main' or 'release/*'",
                    )
        if not remote.username or _CONTROL.search(remote.username) or ":" in remote.username:
            checker.fail(
                at("bottle", "git", index, "username"),
                "expected the user name the git host wants with a token (no ':' or control characters), "
                "like 'x-access-token' or 'oauth2'",
            )
        elif looks_like_secret(remote.username):
            checker.fail(at("bottle", "git", index, "username"), "looks like a token; the credential belongs in token_ref")
        for j, waiver in enumerate(remote.allow_findings):
            if not waiver.path.strip() or _CONTROL.search(waiver.path):
                checker.fail(
                    at("bottle", "git", index, "allow_findings", j, "path"),
                    "expected a path pattern in the repository like 'tests/fixtures/*'",
                )
            if waiver.rule not in WAIVABLE_RULES:
                checker.fail(
                    at("bottle", "git", index, "allow_findings", j, "rule"),
                    "expected one of the scanner's rules: " + ", ".join(WAIVABLE_RULES)
                    + (" (a bottle's own credentials are never waived)" if waiver.rule == BROKERED else ""),
                )

    for index, ref in enumerate(bottle.supervise_token_refs):
        _check_token_ref(checker, ref, at("bottle", "supervise_token_refs", index))
    if bottle.supervise_token_refs and not bottle.supervise:
        checker.fail(
            at("bottle", "supervise_token_refs"),
            "token_refs for proposals need supervise: true",
            hint='set "supervise": true, or remove supervise_token_refs',
        )

    token_names = _token_env_names(agent)
    claude = ANTHROPIC_HOST in route_hosts
    for key, value in agent.env.items():
        path = at("env", key)
        if not _ENV_NAME.match(key):
            checker.fail(path, "expected an environment variable name (letters, digits, '_')")
        if key in RESERVED_AGENT_ENV:
            checker.fail(path, f"`{key}` is set by bottle itself (proxy and CA trust); remove it")
        if key in token_names:
            checker.fail(
                path,
                f"`{key}` is the token_ref of a route or git remote; its value stays on the host",
                hint="the egress proxy or git gate injects the credential; the agent never needs it",
            )
        if claude and key in CLAUDE_AGENT_ENV:
            checker.fail(path, f"`{key}` is set by bottle for the api.anthropic.com route; remove it")
        shape = looks_like_secret(value)
        if shape:
            checker.fail(
                path,
                f"the value looks like {shape}; secrets never go into the agent's environment",
                hint="add an egress_proxy route whose token_ref names where the host keeps the secret",
            )

    limits = bottle.limits
    if limits.memory is not None:
        try:
            parse_memory(limits.memory)
        except ValueError as exc:
            checker.fail(at("bottle", "limits", "memory"), str(exc))
    if limits.pids is not None and not 1 <= limits.pids <= _MAX_PIDS:
        checker.fail(at("bottle", "limits", "pids"), f"expected an integer from 1 to {_MAX_PIDS}")

    seen_groups: set[str] = set()
    for index, group in enumerate(bottle.syscalls.allow):
        path = at("bottle", "syscalls", "allow", index)
        if not group or _CONTROL.search(group) or len(group) > 60:
            checker.fail(path, "expected the name of a syscall group like 'io_uring'")
        if group in seen_groups:
            checker.fail(path, f"syscall group `{group}` is listed twice; expected each group once")
        seen_groups.add(group)
        try:
            seccomp.normalise_allow([group])
        except ValueError as exc:
            checker.fail(path, str(exc), hint="docs/manifest.md#syscall-groups lists the groups; `bottle doctor` explains them")

    if tuple(allow) != bottle.egress.allow:
        egress = msgspec.structs.replace(bottle.egress, allow=tuple(allow))
        agent = msgspec.structs.replace(agent, bottle=msgspec.structs.replace(bottle, egress=egress))
    return agent


def _join(prefix: str, *keys: object) -> str:
    path = prefix
    for key in keys:
        path = _at(path, key)
    return path


def _build_agent(checker: _Checker, raw: dict[str, Any], prefix: str, exclude: frozenset[str], **loader: str) -> Agent:
    checker.check_struct(raw, Agent, prefix, exclude=exclude)
    data = dict(raw)
    data.update(loader)
    try:
        agent = msgspec.convert(data, Agent)
    except msgspec.ValidationError as exc:  # the walk above should have caught it; keep the promise anyway
        message = str(exc)
        where = ""
        if " - at `$" in message:
            message, _, where = message.partition(" - at `$")
            where = where.rstrip("`").lstrip(".")
        checker.fail(_join(prefix, *[p for p in where.split(".") if p]) if where else prefix, message.lower())
    return _validate_agent(checker, agent, prefix)


# -- formats ----------------------------------------------------------------


def parse_json_manifest(text: str, source: str, base_dir: str) -> tuple[Agent, ...]:
    """The agents of a JSON manifest, in declaration order.

    Raises ``ManifestError`` (field ``(document)`` when the text is not JSON).
    """
    checker = _Checker(source)
    try:
        data = json.loads(text, object_pairs_hook=_json_object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        checker.fail(DOCUMENT, f"expected JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        checker.fail(DOCUMENT, f"expected JSON: {exc}" if isinstance(exc, ValueError) else "expected JSON nested less deeply")
    if not isinstance(data, dict):
        checker.fail(DOCUMENT, f'expected an object like {{"agents": {{...}}}}, got {_got(data)}')
    checker.no_duplicates(data, "")
    for key in data:
        if key not in ("version", "agents"):
            suggestion = did_you_mean(str(key), ("version", "agents"))
            problem = f"unknown field `{_shown(str(key)):.60}`"
            if suggestion:
                problem += f"; did you mean `{suggestion}`?"
            checker.fail(
                _at("", key) if isinstance(key, str) else DOCUMENT,
                problem,
                hint='agents go under "agents": {"NAME": {...}}; the only other top-level key is "version"',
            )
    if "version" in data:
        version = data["version"]
        if isinstance(version, bool) or version != MANIFEST_VERSION:
            checker.fail("version", f"expected {MANIFEST_VERSION}, the only manifest version there is")
    agents_raw = data.get("agents", {})
    if not isinstance(agents_raw, dict):
        checker.fail("agents", f"expected an object of agents by name, got {_got(agents_raw)}")
    checker.no_duplicates(agents_raw, "agents", what="agent")
    agents = []
    for name, raw in agents_raw.items():
        path = _at("agents", name)
        _check_name(checker, name, path)
        agents.append(
            _build_agent(checker, raw, path, LOADER_FIELDS, name=name, source=source, base_dir=base_dir)
        )
    return tuple(agents)


_FENCE = re.compile(r"^(---|\.\.\.)[ \t]*$")


def _split_front_matter(checker: _Checker, text: str) -> tuple[str, str]:
    lines = text.lstrip("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        checker.fail(DOCUMENT, "expected YAML front matter: a first line '---', the fields, then '---'")
    for index in range(1, len(lines)):
        if _FENCE.match(lines[index].rstrip("\r\n")):
            return "".join(lines[1:index]), "".join(lines[index + 1:])
    checker.fail(DOCUMENT, "expected a closing '---' line after the front matter")


def parse_markdown_agent(text: str, source: str, base_dir: str) -> Agent:
    """The agent of a Markdown agent file; the body (trimmed) becomes ``instructions``.

    Raises ``ManifestError``; field paths are relative to the front matter
    (``bottle.egress.allow[0]``), ``(document)`` when it does not parse.
    """
    checker = _Checker(source, kind="markdown")
    front, body = _split_front_matter(checker, text)
    try:
        data = yaml.load(front, Loader=_FrontMatterLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "unparseable"
        checker.fail(DOCUMENT, f"expected YAML front matter: {problem}{where}")
    except (ValueError, TypeError, RecursionError, OverflowError):
        checker.fail(DOCUMENT, "expected YAML front matter that a safe YAML loader accepts")
    if not isinstance(data, dict):
        checker.fail(DOCUMENT, f"expected the front matter to be a mapping with `name`, got {_got(data)}")
    exclude = LOADER_FIELDS - {"name"}
    checker.check_struct(data, Agent, "", exclude=exclude)
    _check_name(checker, data["name"], "name")
    return _build_agent(
        checker, data, "", exclude, instructions=body.strip(), source=source, base_dir=base_dir
    )


def parse_source(source: ManifestText) -> tuple[Agent, ...]:
    """The agents one source declares."""
    if source.kind == "markdown":
        return (parse_markdown_agent(source.text, source.source, source.base_dir),)
    return parse_json_manifest(source.text, source.source, source.base_dir)


def load_manifest(layers: Sequence[Sequence[ManifestText]]) -> Manifest:
    """Merge layers of sources, earliest first, into one ``Manifest``.

    An agent in a later layer replaces the earlier agent of the same name
    whole (no field-by-field merge). Within a layer each name may be
    declared once; a second declaration is a ``ManifestError`` naming both.
    """
    agents: dict[str, Agent] = {}
    sources: list[str] = []
    for layer in layers:
        seen: dict[str, str] = {}
        for text in layer:
            sources.append(text.source)
            for agent in parse_source(text):
                if agent.name in seen:
                    path = "name" if text.kind == "markdown" else _at("agents", agent.name)
                    raise ManifestError(
                        text.source,
                        path,
                        f"agent `{agent.name}` is also declared in {seen[agent.name]}",
                        hint="each agent is declared once per level (user, project, --manifest); "
                        "remove or rename one",
                    )
                seen[agent.name] = text.source
                agents[agent.name] = agent
    return Manifest(agents=agents, sources=tuple(sources))

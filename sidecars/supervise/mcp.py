"""MCP (Model Context Protocol) over streamable HTTP for the supervise sidecar: JSON-RPC on ``POST /mcp``.

Every request gets its answer in the response body as ``application/json``
(the transport allows that instead of an event stream); notifications get
``202``. The tools file proposals and report on them, so Claude Code (or any
MCP client) can ask for a host, a route or a new image, and wait for the
person's answer.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from bottle.core.proposals import MAX_DOCKERFILE_BYTES, ProposalRefused

if TYPE_CHECKING:
    from bottle.sidecars.supervise.server import SuperviseService

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_INFO = {"name": "bottle-supervise", "version": "1"}
INSTRUCTIONS = (
    "You run in a bottle: the network reaches only allowed hosts and your image is fixed. "
    "When you need more (a host, an authenticated API, a package in the image), file a proposal "
    "with a clear reason; a person approves or rejects it. Use proposal_wait to wait for the answer. "
    "Never put a secret in a proposal: routes name a token_ref the operator holds."
)

_REASON = {"type": "string", "description": "Why you need this, in a sentence or two, for the person deciding."}
_ID = {"type": "integer", "minimum": 1, "description": "The proposal id returned when it was filed."}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "propose_allow_host",
        "description": "Ask to reach one more host over HTTP(S) (egress allowlist). Live without a restart once approved.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "host": {"type": "string", "description": "A host: 'api.example.com', '*.example.com' or 'host:8443'."},
                "reason": _REASON,
            },
            "required": ["host", "reason"],
        },
    },
    {
        "name": "propose_route",
        "description": (
            "Ask for an authenticated API route: the egress proxy adds the credential from token_ref (held by "
            "the operator, never by you). Takes effect when the bottle is resumed."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "upstream": {"type": "string", "description": "https URL of the API, e.g. https://api.github.com"},
                "token_ref": {"type": "string", "description": "Where the operator keeps the secret: ENV_NAME or file:PATH."},
                "auth_scheme": {"type": "string", "description": "bearer (default), x-api-key, basic or header:<Name>."},
                "reason": _REASON,
            },
            "required": ["upstream", "token_ref", "reason"],
        },
    },
    {
        "name": "propose_capability_change",
        "description": (
            "Propose a new Dockerfile for your image (e.g. to install a package). It builds on your current image "
            "(ARG BASE / FROM ${BASE}); ADD and COPY are not allowed. If approved the bottle is stopped and resumed "
            f"with the new image; your conversation is kept. At most {MAX_DOCKERFILE_BYTES} bytes."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"dockerfile": {"type": "string"}, "reason": _REASON},
            "required": ["dockerfile", "reason"],
        },
    },
    {
        "name": "proposal_status",
        "description": "The current status of a proposal: pending, approved, rejected, applied or failed, with the note.",
        "inputSchema": {"type": "object", "properties": {"id": _ID}, "required": ["id"]},
    },
    {
        "name": "proposal_wait",
        "description": "Wait until a person decides a proposal (or the timeout passes); returns its status and note.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "id": _ID,
                "timeout_seconds": {"type": "number", "minimum": 0, "maximum": 300, "default": 60},
            },
            "required": ["id"],
        },
    },
    {
        "name": "list_proposals",
        "description": "Every proposal this bottle filed, with its status.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]

_KIND_OF_TOOL = {
    "propose_allow_host": "allow-host",
    "propose_route": "add-route",
    "propose_capability_change": "capability-change",
}


def error_response(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _result(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _tool_result(data: Any, text: str, *, is_error: bool = False) -> dict[str, Any]:
    body = text if data is None else f"{text}\n{json.dumps(data, indent=2)}"
    result: dict[str, Any] = {"content": [{"type": "text", "text": body}], "isError": is_error}
    if isinstance(data, dict):
        result["structuredContent"] = data
    return result


def _summary(p: dict[str, Any]) -> str:
    line = f"proposal {p['id']} ({p['kind']}) is {p['status']}"
    if p.get("note"):
        line += f"; note from {p.get('decided_by') or 'the operator'}: {p['note']}"
    if p.get("error"):
        line += f"; error: {p['error']}"
    return line


def call_tool(service: SuperviseService, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The result of ``tools/call``; refusals are tool errors (``isError``) the model can read and fix."""
    from bottle.sidecars.supervise.server import proposal_json  # noqa: PLC0415

    try:
        if name in _KIND_OF_TOOL:
            body = {k: v for k, v in arguments.items() if k not in ("kind",)}
            body["kind"] = _KIND_OF_TOOL[name]
            p = proposal_json(service.file(body))
            return _tool_result(p, f"filed proposal {p['id']}; a person will decide. Call proposal_wait with id {p['id']}.")
        if name in ("proposal_status", "proposal_wait"):
            proposal_id = arguments.get("id")
            if not isinstance(proposal_id, int) or isinstance(proposal_id, bool):
                return _tool_result(None, "id must be an integer proposal id", is_error=True)
            if name == "proposal_status":
                p = proposal_json(service.get(proposal_id))
            else:
                timeout = arguments.get("timeout_seconds", 60)
                timeout = float(timeout) if isinstance(timeout, (int, float)) else 60.0
                p = proposal_json(service.wait(proposal_id, timeout))
            return _tool_result(p, _summary(p))
        if name == "list_proposals":
            items = [proposal_json(p) for p in service.list()]
            text = "\n".join(_summary(p) for p in items) or "no proposals yet"
            return _tool_result({"proposals": items}, text)
    except ProposalRefused as exc:
        return _tool_result(None, f"refused: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), is_error=True)
    except LookupError as exc:
        return _tool_result(None, str(exc), is_error=True)
    raise KeyError(name)


def _one(service: SuperviseService, message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return error_response(message.get("id") if isinstance(message, dict) else None, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
    method = message["method"]
    if "id" not in message:
        return None  # a notification (notifications/initialized, cancelled): nothing to answer
    request_id = message["id"]
    params = message.get("params") or {}
    if not isinstance(params, dict):
        return error_response(request_id, INVALID_PARAMS, "params must be an object")
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        return _result(request_id, {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS,
        })
    if method == "ping":
        return _result(request_id, {})
    if method == "tools/list":
        return _result(request_id, {"tools": TOOLS})
    if method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            return error_response(request_id, INVALID_PARAMS, "tools/call needs a name and an arguments object")
        try:
            return _result(request_id, call_tool(service, name, arguments))
        except KeyError:
            return error_response(request_id, INVALID_PARAMS, f"no tool named {name!r}")
    return error_response(request_id, METHOD_NOT_FOUND, f"method {method!r} is not supported")


def handle(service: SuperviseService, body: Any, session: str | None) -> tuple[Any, dict[str, str]]:
    """The answer to one POST /mcp body (a message or a batch) and the headers to send; None: 202, no body."""
    headers: dict[str, str] = {}
    messages = body if isinstance(body, list) else [body]
    if any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages):
        headers["Mcp-Session-Id"] = secrets.token_hex(16)
    elif session:
        headers["Mcp-Session-Id"] = session
    answers = [a for a in (_one(service, m) for m in messages) if a is not None]
    if not answers:
        return None, headers
    return (answers if isinstance(body, list) else answers[0]), headers

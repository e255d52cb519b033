"""Gemini-native ``generateContent`` / ``streamGenerateContent`` (contract §4.4), and Google's error shape.

Mounted at ``/v1beta/models/{model}:{action}`` and ``/v1/models/...``, where the
google-genai SDK's base URL leads (v1beta, or v1, the default API version of google-genai 3.x).
``x-goog-api-key`` stays the caller's Google key; the project key travels in
``x-mnexium-key`` or ``Authorization: Bearer``, and ``mnx`` in ``x-mnx-*`` headers
(the SDK sends no unknown body fields, and rejects unknown response fields, so the
mnx ids come back in the ``X-Mnx-*`` headers only). The gateway's context goes into
``systemInstruction``, replayed history in front of ``contents``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import BadRequest, ErrorShape, GatewayError, NotFound
from gateway.pipeline.context import AssembledContext
from gateway.proxy.gemini_format import (
    GEMINI_FORMAT, GeminiStreamAccumulator, camel_case_gemini_fields, contents_to_messages, merge_contents,
    messages_to_contents, response_message, with_system_instruction,
)
from gateway.proxy.request_fields import (INTEGER, NAME, NUMBER, OBJECT, OBJECTS, STRING, STRINGS, check_each,
                                          check_fields)
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.routing import Call, PathOwner, endpoint

_ACTIONS = {"generateContent": False, "streamGenerateContent": True}


_GRPC_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _google_error(error: GatewayError) -> dict[str, Any]:
    # Google's ErrorInfo detail is the native place for a machine-readable reason.
    info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.code,
                            "domain": "mnx-gateway"}
    # A usage limit's "current" and "limit": ErrorInfo's metadata is a map of strings.
    metadata = {name: str(error.extra[name]) for name in ("current", "limit") if name in error.extra}
    if metadata:
        info["metadata"] = metadata
    return {"error": {"code": error.status, "message": error.message,
                      "status": _GRPC_STATUS.get(error.status, "INTERNAL"), "details": [info]}}


GEMINI_ERRORS = ErrorShape("gemini", _google_error)


def _error_frame(code: str, message: str) -> bytes:
    """Google's in-stream error object (its SDK raises on it), with our code as the ErrorInfo reason."""
    return b"data: " + json.dumps({"error": {
        "code": 502, "status": "UNAVAILABLE", "message": message,
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code,
                     "domain": "mnx-gateway"}]}}).encode() + b"\n\n"


def _from_path(request: Request, body: dict[str, Any]) -> None:
    """The model and the streaming choice, from the URL; and Google's snake_case field names
    (``system_instruction``...) as the camelCase ones the gateway reads."""
    camel_case_gemini_fields(body)
    model, _, action = request.path_params["target"].rpartition(":")
    if action not in _ACTIONS or not model:
        raise NotFound(f"unknown Gemini method {request.path_params['target']!r}", code="not_found")
    body["model"] = model
    body["stream"] = _ACTIONS[action]


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


# The part fields the conversion to history reads, and the type each must have. A part's other
# fields (fileData, executableCode, thought, ...) pass untouched.
_PART_FIELDS = {"text": (str, "a string"), "inlineData": (dict, "an object"),
                "functionCall": (dict, "an object"), "functionResponse": (dict, "an object")}
_STRING_FIELDS = {"inlineData": ("mimeType", "data"), "functionCall": ("id", "name"),
                  "functionResponse": ("id", "name")}
# What LiteLLM reads when it translates for another provider (request_fields).
_GENERATION_CONFIG = {"temperature": NUMBER, "topP": NUMBER, "topK": NUMBER, "maxOutputTokens": INTEGER,
                      "candidateCount": INTEGER, "seed": INTEGER, "presencePenalty": NUMBER,
                      "frequencyPenalty": NUMBER, "stopSequences": STRINGS, "responseMimeType": STRING,
                      "responseSchema": OBJECT}
_FUNCTION_DECLARATION = {"name": NAME, "description": STRING, "parameters": OBJECT}


def _validate_part(part: dict[str, Any], where: str, code: str) -> None:
    if all(value is None for value in part.values()):
        raise _bad(f"{where} has no data: set text, inlineData, functionCall or another part field", where, code)
    for field, (kind, name) in _PART_FIELDS.items():
        value = part.get(field)
        if value is None:  # null is "not set" in Google's JSON
            continue
        if not isinstance(value, kind):
            raise _bad(f"{where}.{field} must be {name}", f"{where}.{field}", code)
        for inner in _STRING_FIELDS.get(field, ()):
            if value.get(inner) is not None and not isinstance(value[inner], str):
                raise _bad(f"{where}.{field}.{inner} must be a string", f"{where}.{field}.{inner}", code)


def validate_gemini_body(body: dict[str, Any]) -> None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("contents must be a non-empty array", "contents", "invalid_contents")
    for index, content in enumerate(contents):
        where = f"contents[{index}]"
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            raise _bad(f"{where}.role must be user or model", f"{where}.role", "invalid_contents")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise _bad(f"{where}.parts must be a non-empty array of parts", f"{where}.parts", "invalid_contents")
        for number, part in enumerate(parts):
            _validate_part(part, f"{where}.parts[{number}]", "invalid_contents")
    check_fields(body, {"systemInstruction": OBJECT, "generationConfig": OBJECT, "toolConfig": OBJECT,
                        "safetySettings": OBJECTS, "cachedContent": STRING})
    check_fields(body.get("generationConfig") or {}, _GENERATION_CONFIG, where="generationConfig",
                 code="invalid_generationConfig")
    check_each(body, "tools", _validate_tool)
    instruction = body.get("systemInstruction")
    if isinstance(instruction, dict) and instruction.get("parts") is not None:
        parts = instruction["parts"]
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise _bad("systemInstruction.parts must be an array of parts", "systemInstruction.parts",
                       "invalid_systemInstruction")
        for number, part in enumerate(parts):
            _validate_part(part, f"systemInstruction.parts[{number}]", "invalid_systemInstruction")


def _validate_tool(tool: dict[str, Any], where: str) -> None:
    check_fields(tool, {"functionDeclarations": OBJECTS}, where=where, code="invalid_tools")
    for number, declaration in enumerate(tool.get("functionDeclarations") or []):
        check_fields(declaration, _FUNCTION_DECLARATION, where=f"{where}.functionDeclarations[{number}]",
                     code="invalid_tools", required=("name",))


def _with_volatile_part(contents: list[dict[str, Any]], volatile: str | None) -> list[dict[str, Any]]:
    """``contents`` with ``volatile`` as the first part of the latest user content that holds more
    than function responses (the rule of gateway/pipeline/context.py ``last_user_index``: a
    content of function responses takes no text, translated for another provider least of all)."""
    if not volatile:
        return contents
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        parts = content.get("parts") or []
        if content.get("role", "user") == "user" and any(
                not (isinstance(part, dict) and "functionResponse" in part) for part in parts):
            changed = [*contents]
            changed[index] = {**content, "parts": [{"text": volatile}, *parts]}
            return changed
    return contents


def _with_context(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    request = _with_volatile_part(body["contents"], context.volatile_text)
    forwarded = {**body, "contents": merge_contents(messages_to_contents(context.history), request)}
    if isinstance(body.get("tools"), list):
        # A null field is "not set" in Google's JSON, and a tool with nothing set declares
        # nothing: LiteLLM's translation for another provider would iterate a null
        # functionDeclarations and fail.
        tools = [{key: value for key, value in tool.items() if value is not None} for tool in body["tools"]]
        forwarded["tools"] = [tool for tool in tools if tool]
        if not forwarded["tools"]:
            del forwarded["tools"]
    instruction = with_system_instruction(body.get("systemInstruction"), context.system_text)
    if instruction is not None:
        forwarded["systemInstruction"] = instruction
    return forwarded


GEMINI = SurfaceSpec(
    request_type="gemini",
    validate=validate_gemini_body,
    request_messages=lambda body: contents_to_messages(body["contents"]),
    with_context=_with_context,
    wire=GEMINI_FORMAT,
    answer_message=response_message,
    new_accumulator=GeminiStreamAccumulator,
    error_frame=_error_frame,
    native_key_header=lambda route: "x-goog-api-key" if route.provider == "gemini" else None,
    from_path=_from_path,
    mnx_in_body=False,
)


async def generate_content(call: Call) -> Response:
    return await proxy_turn(call, GEMINI)


_generate_content = endpoint(generate_content, scope="chat:write", surface=GEMINI_ERRORS)
# Relative to the /v1 mount: every path under /models/ answers in Google's shape.
routes = [PathOwner("/models/", GEMINI_ERRORS, [Route("/models/{target}", _generate_content, methods=["POST"])])]
# Relative to the /v1beta mount, Google's alone: every path under it answers in Google's shape.
v1beta_routes = [PathOwner("/", GEMINI_ERRORS, [Route("/models/{target}", _generate_content, methods=["POST"])])]

"""The API's OpenAPI 3.1 document, generated from the endpoints' own declarations.

Each API endpoint is declared with `@operation(...)`: its summary (the docstring's first
line), its query parameters, its JSON body schema and its response schema. The same
declarations validate requests (`read_body`, `read_query`) and build `/api/v1/openapi.json`,
so the document cannot drift from what the code accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.convertors import IntegerConvertor
from starlette.requests import Request
from starlette.routing import Route

from mailer.models import MAX_ID
from mailer.web.guard import allowed_roles
from mailer.web.problems import InvalidInput
from mailer.web.security import unstorable_text


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    status: int = 200
    query: list[Param] = field(default_factory=list)
    content_type: str = "application/json"


def operation(
    tag: str,
    *,
    body: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    status: int = 200,
    query: list[Param] | None = None,
    content_type: str = "application/json",
) -> Callable[[Any], Any]:
    def mark(endpoint: Any) -> Any:
        summary = (endpoint.__doc__ or endpoint.__name__).strip().splitlines()[0]
        endpoint.operation = Operation(
            summary, tag, body, response, status, list(query or []), content_type
        )
        return endpoint

    return mark


# ---- validation of the declared subset of JSON Schema ------------------------------------


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON body, checked against the endpoint's declared schema."""
    op: Operation = request.scope["endpoint"].operation
    assert op.body is not None
    if "application/json" not in request.headers.get("content-type", ""):
        raise InvalidInput(
            [{"field": "body", "message": "send JSON with Content-Type: application/json"}]
        )
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput([{"field": "body", "message": f"not valid JSON: {exc}"}]) from None
    except RecursionError:
        # no schema here nests deeper than a few levels; the parser gives up near 1,000
        message = "nested too deeply: send the fields the operation's schema declares"
        raise InvalidInput([{"field": "body", "message": message}]) from None
    errors = check(op.body, data, "body")
    if errors:
        raise InvalidInput(errors)
    return dict(data)


def read_query(request: Request) -> dict[str, Any]:
    """The declared query parameters, converted to their types, with defaults."""
    op: Operation = request.scope["endpoint"].operation
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for param in op.query:
        raw = request.query_params.get(param.name)
        if raw is None:
            if param.required:
                errors.append({"field": param.name, "message": "required"})
            values[param.name] = param.schema.get("default")
            continue
        value: Any = raw
        if param.schema.get("type") == "integer":
            try:
                value = int(raw)
            except ValueError:
                errors.append({"field": param.name, "message": f"{raw!r} is not an integer"})
                continue
        errors.extend(check(param.schema, value, param.name))
        values[param.name] = value
    if errors:
        raise InvalidInput(errors)
    return values


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def check(schema: dict[str, Any], value: Any, where: str) -> list[dict[str, Any]]:
    """Errors of `value` against `schema` (type, required, enum, bounds, lengths, items)."""
    if not _has_type(schema.get("type"), value):
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return [{"field": where, "message": f"must be {' or '.join(names)}"}]
    if value is None:
        return []
    errors: list[dict[str, Any]] = []
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(map(str, schema["enum"]))
        errors.append({"field": where, "message": f"{value!r} is not one of {choices}"})
    if isinstance(value, str):
        errors += _check_string(schema, value, where)
    elif isinstance(value, int) and not isinstance(value, bool):
        errors += _check_integer(schema, value, where)
    elif isinstance(value, list):
        errors += _check_array(schema, value, where)
    elif isinstance(value, dict):
        errors += _check_object(schema, value, where)
    return errors


def _has_type(types: Any, value: Any) -> bool:
    if types is None:
        return True
    for name in types if isinstance(types, list) else [types]:
        if name == "null":
            if value is None:
                return True
        elif isinstance(value, _TYPES[name]) and not (
            name in ("integer", "number") and isinstance(value, bool)
        ):
            return True
    return False


def _check_string(schema: dict[str, Any], value: str, where: str) -> list[dict[str, Any]]:
    reason = unstorable_text(value)
    if reason:
        return [{"field": where, "message": reason}]
    if len(value) > schema.get("maxLength", 1 << 30):
        return [{"field": where, "message": f"longer than {schema['maxLength']} characters"}]
    minimum = schema.get("minLength", 0)
    if len(value) < minimum:
        message = "must not be empty" if minimum == 1 else f"needs at least {minimum} characters"
        return [{"field": where, "message": message}]
    return []


#: The largest integer a body may carry where its schema names no maximum: what the database's
#: integer columns (ids, counts, versions) hold, so no value gets as far as overflowing there.
MAX_INTEGER = MAX_ID


def _check_integer(schema: dict[str, Any], value: int, where: str) -> list[dict[str, Any]]:
    if value < schema.get("minimum", value):
        return [{"field": where, "message": f"must be at least {schema['minimum']}"}]
    maximum = schema.get("maximum", MAX_INTEGER)
    if value > maximum:
        return [{"field": where, "message": f"must be at most {maximum}"}]
    return []


def _check_array(schema: dict[str, Any], value: list[Any], where: str) -> list[dict[str, Any]]:
    if len(value) > schema.get("maxItems", 1 << 30):
        return [{"field": where, "message": f"at most {schema['maxItems']} items"}]
    if len(value) < schema.get("minItems", 0):
        return [{"field": where, "message": f"at least {schema['minItems']} item(s)"}]
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        errors += check(schema.get("items", {}), item, f"{where}[{i}]")
    return errors


def _check_object(
    schema: dict[str, Any], value: dict[str, Any], where: str
) -> list[dict[str, Any]]:
    errors = [
        {"field": f"{where}.{name}", "message": "required"}
        for name in schema.get("required", [])
        if name not in value
    ]
    props = schema.get("properties", {})
    for name, item in value.items():
        if name in props:
            errors += check(props[name], item, f"{where}.{name}")
        elif schema.get("additionalProperties") is False:
            errors.append({"field": f"{where}.{name}", "message": "unknown field"})
    return errors


# ---- the document --------------------------------------------------------------------------

#: `{campaign_id:id}` in a Starlette path is `{campaign_id}` in OpenAPI.
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def document(routes: list[Any], *, title: str, version: str, prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` (those declared with `@operation`)."""
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        op: Operation | None = getattr(route.endpoint, "operation", None)
        if op is None:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            path = paths.setdefault(prefix + _CONVERTOR.sub(r"{\1}", route.path), {})
            path[method.lower()] = _operation(route, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM_SCHEMA},
        },
    }


def _operation(route: Route, op: Operation) -> dict[str, Any]:
    problem = {
        "description": "problem details (RFC 9457)",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}
            if isinstance(convertor, IntegerConvertor)
            else {"type": "string", "pattern": "^[^/]+$"},
        }
        for name, convertor in route.param_convertors.items()
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "schema": p.schema,
            "description": p.description,
        }
        for p in op.query
    ]
    success: dict[str, Any] = {"description": "success"}
    if op.response is not None:
        success["content"] = {op.content_type: {"schema": op.response}}
    responses: dict[str, Any] = {str(op.status): success}
    roles = allowed_roles(route.endpoint)
    for status in ("400", "404", "409", "422", "429"):
        responses[status] = problem
    if roles is not None:
        responses["401"] = problem
        responses["403"] = problem
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": route.name,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if roles is not None:
        out["security"] = [{"bearer": []}]
        out["description"] = "Roles: " + ", ".join(sorted(r.value for r in roles))
    else:
        out["security"] = []
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return out

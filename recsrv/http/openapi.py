"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Written by hand, to the server's actual behaviour: every route, each parameter with
the limits the handlers enforce, the request bodies (an event's schema per type), and
every status a route can answer with the error codes it uses. Access levels come from
recsrv.http.access, so the document and the middleware cannot disagree.
tests/integration/test_schema.py runs schemathesis against a live server with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from recsrv import __version__, prequential
from recsrv.events import (
    MAX_ID_CHARS,
    MAX_LINE_ITEMS,
    MAX_QUANTITY,
    MAX_QUERY_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TITLE_CHARS,
    MAX_TS,
    MAX_URL_CHARS,
)
from recsrv.http.access import Access, route_access
from recsrv.scoring.components import COMPONENTS

Schema = dict[str, Any]

ID: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
# In an event, a field whose value is null counts as absent.
OPTIONAL_ID: Schema = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_ID_CHARS}
QUANTITY: Schema = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_QUANTITY}
PRICE: Schema = {"type": ["number", "null"], "minimum": 0}
PROPERTIES: Schema = {
    "type": ["object", "null"],
    "description": "kept, not interpreted; at most 4 KiB once encoded as JSON",
}
TS: Schema = {
    "description": "epoch seconds, or an RFC 3339 date-time with a UTC offset or Z "
    "(e.g. 2024-05-01T12:00:00.5+02:00), from 1970 on; default: the time it is received",
    "anyOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": MAX_TS},
        {"type": "string", "format": "date-time", "minLength": 19, "maxLength": 64},
        {"type": "null"},
    ],
}

# Error codes by status: what the handlers and middlewares answer with.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "bad_request",
        "invalid_parameter",
        "invalid_body",
        "invalid_events",
        "malformed_body",
        "query_too_long",
        "too_many_parameters",
    ),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found", "item_not_found"),
    409: ("not_checkpoint_writer",),
    413: ("payload_too_large", "too_many_events"),
    415: ("unsupported_media_type",),
    429: ("too_many_requests", "too_many_streams"),
    503: (
        "unavailable",
        "broker_unavailable",
        "not_ready",
        "store_unavailable",
        "shutting_down",
        "too_many_streams",
    ),
}
ERROR_HEADERS: dict[int, Schema] = {
    401: {
        "WWW-Authenticate": {
            "required": True,
            "schema": {"type": "string"},
            "description": 'Bearer realm="recsrv"',
        }
    },
    429: {
        "Retry-After": {
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "seconds until the address's bucket has a token (rate limit only)",
        }
    },
}
ERROR_MEANINGS = {
    400: "invalid parameter, query or body",
    401: "no API key, or an unknown one",
    403: "a public key where a secret key is needed",
    404: "not found",
    409: "another replica holds the checkpoint lease and writes the checkpoints",
    413: "body or event array too large",
    415: "the body is not application/json (or text/plain)",
    429: "rate limit of the client address, or too many live streams",
    503: "unavailable (event log, store, restore in progress, shutdown or capacity)",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _unit(description: str) -> Schema:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _content(media_type: str, description: str) -> Schema:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


# A query id may be given empty: it then counts as absent.
QUERY_ID: Schema = {"type": "string", "maxLength": MAX_ID_CHARS}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, example: str, schema: Schema = ID) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema, "example": example}


K = _query("k", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "how many items")
CATEGORY = _query("category", QUERY_ID, "only items of this catalog category")
AFTER = _query(
    "after",
    QUERY_ID,
    "an event_id: wait, up to server.after_timeout_ms (500 by default), until that event "
    "is applied, then answer (200 either way; model.after says whether it was)",
)
ITEM_ID = _path("item_id", "sku-123")


def _operation(
    summary: str,
    method: str,
    path: str,
    ok: dict[str, Schema],
    errors: tuple[int, ...],
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    protect_metrics: bool = False,
) -> Schema:
    """One operation; its security and the 400/401/403/429 it may answer follow its access."""
    access = route_access(method.upper(), path, protect_metrics)
    statuses = {400, *errors}  # 400: every route has query caps
    if access is not Access.OPEN:
        statuses |= {401, 429}  # 429: a refused key spends a token too
    if access is Access.SECRET:
        statuses.add(403)
    if body is not None:
        statuses |= {413, 415}
    operation: Schema = {
        "summary": summary,
        "operationId": method
        + "_"
        + "_".join(part.strip("{}") for part in path.strip("/").split("/")),
        "tags": [access.value],
        "security": SECURITY[access],
        "parameters": parameters or [],
        "responses": {
            **ok,
            **{str(s): {"$ref": f"#/components/responses/Error{s}"} for s in sorted(statuses)},
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


SECURITY: dict[Access, list[Schema]] = {
    Access.OPEN: [],
    Access.PUBLIC: [{"secretKey": []}, {"publicKey": []}, {"publicKeyInQuery": []}],
    Access.SECRET: [{"secretKey": []}],
}
SECURITY_SCHEMES: Schema = {
    "secretKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A secret key (auth.secret_keys): every route. Never in a URL.",
    },
    "publicKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A public key (auth.public_keys): recommendation reads, live streams "
        "and browsing events; rate limited per client address.",
    },
    "publicKeyInQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "A public key as ?key=, for EventSource and sendBeacon, which cannot "
        "set headers; taken only without an Authorization header.",
    },
}


def _interaction(types: list[str], required: list[str], extra: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["type", "session_id", *required],
        "properties": {
            "type": {"type": "string", "enum": types},
            "session_id": ID,
            "user_id": OPTIONAL_ID,
            "quantity": QUANTITY,
            "price": PRICE,
            "ts": TS,
            "event_id": OPTIONAL_ID,
            "properties": PROPERTIES,
            **extra,
        },
    }


LINE_ITEM: Schema = {
    "type": "object",
    "required": ["item_id"],
    "properties": {"item_id": ID, "quantity": QUANTITY, "price": PRICE},
}
CATALOG_ITEM: Schema = {
    "type": "object",
    "required": ["item_id"],
    "properties": {
        "item_id": ID,
        "title": {"type": ["string", "null"], "maxLength": MAX_TITLE_CHARS},
        "category": OPTIONAL_ID,
        "price": PRICE,
        "in_stock": {"type": ["boolean", "null"], "default": True},
        "url": {"type": ["string", "null"], "maxLength": MAX_URL_CHARS},
        "image_url": {"type": ["string", "null"], "maxLength": MAX_URL_CHARS},
        "tags": {
            "type": ["array", "null"],
            "maxItems": MAX_TAGS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS},
        },
        "properties": PROPERTIES,
    },
}
# The body of PUT /v1/items/{item_id}: item_id may be left out (the path gives it).
CATALOG_ITEM_BODY: Schema = {
    "type": "object",
    "properties": {
        name: schema for name, schema in CATALOG_ITEM["properties"].items() if name != "item_id"
    },
    "description": "a catalog item; the path gives its item_id (one in the body must equal it)",
}
NO_ITEMS: Schema = {"items": {"type": "null"}}
SSE = "text/event-stream"
# Each message of a live stream (heartbeats are comments, not messages).
SSE_EVENT: Schema = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "recommendations"},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "increasing"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _ref("RecommendationList"),
        },
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "field": {"type": ["string", "null"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "ModelInfo": {
        "type": "object",
        "required": ["offset", "events"],
        "properties": {
            "offset": {"type": "integer"},
            "events": {"type": "integer", "minimum": 0},
            "after": {
                "type": "boolean",
                "description": "with after=EVENT_ID: whether that event was applied",
            },
        },
    },
    "RecommendationList": {
        "type": "object",
        "required": ["items", "strategy", "model"],
        "properties": {
            "items": {
                "type": "array",
                "maxItems": 100,
                "items": {
                    "type": "object",
                    "required": ["item_id", "score", "reason"],
                    "properties": {
                        "item_id": {"type": "string"},
                        "score": {"type": "number"},
                        "reason": {"type": "string"},
                    },
                },
            },
            "strategy": {"type": "string", "enum": ["session", "user", "item", "popular"]},
            "model": _ref("ModelInfo"),
        },
    },
    "ModelReport": {
        "type": "object",
        "required": ["weights", "prequential", "model"],
        "properties": {
            "weights": {
                "type": "object",
                "description": "the blend's learnt weight per scoring component; they sum to 1",
                "required": list(COMPONENTS),
                "properties": {
                    name: {"type": "number", "minimum": 0, "maximum": 1} for name in COMPONENTS
                },
                "additionalProperties": False,
            },
            "prequential": {
                "type": "object",
                "description": "how the served blend ranked the item a shopper chose next, "
                "measured on sampled stream events before they are learnt",
                "required": ["k", "hr", "mrr", "recent_hr", "recent_mrr", "predictions", "every"],
                "properties": {
                    "k": {"const": prequential.K, "description": "the cut-off of HR and MRR"},
                    "hr": _unit("HR@k over every measured event since the state began"),
                    "mrr": _unit("MRR@k over every measured event since the state began"),
                    "recent_hr": _unit(
                        f"HR@k, exponential average over about the last {prequential.RECENT}"
                    ),
                    "recent_mrr": _unit(
                        f"MRR@k, exponential average over about the last {prequential.RECENT}"
                    ),
                    "predictions": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "events measured since the state began",
                    },
                    "every": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "one eligible event in this many is measured "
                        f"(and each of the first {prequential.WARM_UP})",
                    },
                },
            },
            "model": _ref("ModelInfo"),
        },
    },
    "CatalogItem": CATALOG_ITEM,
    "Item": {
        "type": "object",
        "required": ["item_id", "in_stock", "in_catalog", "counters", "popularity", "model"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "category": {"type": ["string", "null"]},
            "price": {"type": ["number", "null"]},
            "in_stock": {"type": "boolean"},
            "url": {"type": ["string", "null"]},
            "image_url": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "properties": {"type": ["object", "null"]},
            "in_catalog": {"type": "boolean"},
            "counters": {"type": "object", "additionalProperties": {"type": "number"}},
            "popularity": {"type": "number"},
            "model": _ref("ModelInfo"),
        },
    },
    "BrowsingEvent": {
        "description": "What a public key may post: view, click, add_to_cart, "
        "remove_from_cart (item_id required) and search.",
        "oneOf": [
            _interaction(
                ["view", "click", "add_to_cart", "remove_from_cart"], ["item_id"], NO_ITEMS
            ),
            _interaction(
                ["search"],
                [],
                {
                    "item_id": OPTIONAL_ID,
                    "query": {"type": ["string", "null"], "maxLength": MAX_QUERY_CHARS},
                    **NO_ITEMS,
                },
            ),
        ],
    },
    "Event": {
        "description": "An event of design section 3. A public key may post browsing "
        "events only (403 otherwise).",
        "oneOf": [
            _ref("BrowsingEvent"),
            _interaction(
                ["purchase"],
                ["items"],
                {
                    "item_id": OPTIONAL_ID,
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_LINE_ITEMS,
                        "items": LINE_ITEM,
                    },
                },
            ),
            _interaction(["purchase"], ["item_id"], {"item_id": ID, **NO_ITEMS}),
            {
                "type": "object",
                "required": ["type", "item"],
                "properties": {
                    "type": {"const": "catalog.upsert"},
                    "item": CATALOG_ITEM,
                    "ts": TS,
                    "event_id": OPTIONAL_ID,
                },
            },
            {
                "type": "object",
                "required": ["type", "item_id"],
                "properties": {
                    "type": {"const": "catalog.delete"},
                    "item_id": ID,
                    "ts": TS,
                    "event_id": OPTIONAL_ID,
                },
            },
            {
                "type": "object",
                "required": ["type", "user_id"],
                "properties": {
                    "type": {"const": "user.forget"},
                    "user_id": ID,
                    "ts": TS,
                    "event_id": OPTIONAL_ID,
                },
            },
        ],
    },
    "Accepted": {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "minimum": 0}},
    },
    "Ready": {
        "type": "object",
        "required": [
            "status",
            "instance",
            "checkpoint_writer",
            "offset",
            "end_offset",
            "lag",
            "warnings",
        ],
        "properties": {
            "status": {"const": "ready"},
            "instance": {"type": "string", "description": "this replica's name (server.instance)"},
            "checkpoint_writer": {
                "type": "boolean",
                "description": "whether this replica holds the checkpoint lease (writes them)",
            },
            "offset": {"type": "integer"},
            "end_offset": {"type": ["integer", "null"]},
            "lag": {"type": ["integer", "null"], "minimum": 0},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Checkpoint": {
        "type": "object",
        "required": ["id", "created_at", "offset", "events", "format", "chunks", "size"],
        "properties": {
            "id": {"type": "string"},
            "created_at": {"type": "number"},
            "offset": {"type": "integer"},
            "events": {"type": "integer"},
            "format": {"type": "integer"},
            "chunks": {"type": "integer"},
            "size": {"type": "integer"},
            "sha256": {"type": "string"},
            "seconds": {"type": "number"},
        },
    },
}


def _error_response(status: int) -> Schema:
    response = _json(
        {
            "allOf": [
                _ref("Error"),
                {"properties": {"error": {"enum": list(ERROR_CODES[status])}}},
            ]
        },
        ERROR_MEANINGS[status],
    )
    if status in ERROR_HEADERS:
        response["headers"] = ERROR_HEADERS[status]
    if status == 400:
        # aiohttp's HTTP parser refuses, before any recsrv code runs, a request line or a
        # header longer than 8190 bytes, in plain text.
        response["description"] += (
            "; text/plain when the HTTP parser refuses the request itself "
            "(a request line or header over 8190 bytes)"
        )
        response["content"]["text/plain"] = {"schema": {"type": "string"}}
    return response


def _paths(protect_metrics: bool) -> Schema:
    rec_params = [
        _query("session_id", QUERY_ID, "the shopper's session"),
        _query("user_id", QUERY_ID, "the shopper, when known"),
        _query("item_id", QUERY_ID, "the item on screen (never recommended itself)"),
        K,
        CATEGORY,
        AFTER,
        _query(
            "exclude",
            {"type": "string", "maxLength": 4096},
            "comma-separated item ids to leave out (at most 1000; the whole query string "
            "is at most server.max_query_chars, 4096 by default, once URL-encoded)",
        ),
    ]
    ranked = {"200": _json(_ref("RecommendationList"), "ranked items")}
    accepted = {"202": _json(_ref("Accepted"), "published; the event log confirmed")}
    events_body = {
        "oneOf": [
            _ref("Event"),
            {"type": "array", "minItems": 0, "maxItems": 1000, "items": _ref("Event")},
        ]
    }

    def op(method: str, path: str, summary: str, ok: Schema, *errors: int, **kw: Any) -> Schema:
        return _operation(summary, method, path, ok, errors, protect_metrics=protect_metrics, **kw)

    return {
        "/v1/recommendations": {
            "get": op(
                "get",
                "/v1/recommendations",
                "Personalised recommendations",
                ranked,
                parameters=rec_params,
            )
        },
        "/v1/items/{item_id}/similar": {
            "get": op(
                "get",
                "/v1/items/{item_id}/similar",
                "Items viewed or clicked together with this one",
                ranked,
                404,
                parameters=[ITEM_ID, K, AFTER],
            )
        },
        "/v1/items/{item_id}/bought-together": {
            "get": op(
                "get",
                "/v1/items/{item_id}/bought-together",
                "Items carted or purchased together with this one",
                ranked,
                404,
                parameters=[ITEM_ID, K, AFTER],
            )
        },
        "/v1/popular": {
            "get": op(
                "get",
                "/v1/popular",
                "Trending items, time-decayed",
                ranked,
                parameters=[K, CATEGORY, AFTER],
            )
        },
        "/v1/items/{item_id}": {
            "get": op(
                "get",
                "/v1/items/{item_id}",
                "Catalog entry and counters (the shop's figures: secret key)",
                {"200": _json(_ref("Item"), "the item")},
                404,
                parameters=[ITEM_ID],
            ),
            "put": op(
                "put",
                "/v1/items/{item_id}",
                "Publish catalog.upsert",
                accepted,
                503,
                parameters=[ITEM_ID],
                body=CATALOG_ITEM_BODY,
            ),
            "delete": op(
                "delete",
                "/v1/items/{item_id}",
                "Publish catalog.delete",
                accepted,
                503,
                parameters=[ITEM_ID],
            ),
        },
        "/v1/users/{user_id}": {
            "delete": op(
                "delete",
                "/v1/users/{user_id}",
                "Publish user.forget",
                accepted,
                503,
                parameters=[_path("user_id", "u-42")],
            )
        },
        "/v1/events": {
            "post": op(
                "post",
                "/v1/events",
                "Validate and publish events (a public key: browsing events only, else 403)",
                accepted,
                403,
                503,
                body=events_body,
            )
        },
        "/v1/sessions/{session_id}/stream": {
            "get": op(
                "get",
                "/v1/sessions/{session_id}/stream",
                "Live recommendations (Server-Sent Events `recommendations`, each the "
                "RecommendationList JSON)",
                {
                    "200": {
                        "description": "an endless stream",
                        "content": {SSE: {"schema": SSE_EVENT}},
                    }
                },
                503,
                parameters=[
                    _path("session_id", "5f0c2a9e-1b7d-4c3e-9a61-0d2f8b7e4c15"),
                    K,
                    CATEGORY,
                    _query("user_id", QUERY_ID, "the shopper, when known"),
                ],
            )
        },
        "/v1/model": {
            "get": op(
                "get",
                "/v1/model",
                "The blend's learnt weights and its live prequential "
                f"HR@{prequential.K} and MRR@{prequential.K} (secret key)",
                {"200": _json(_ref("ModelReport"), "weights, quality and the model's position")},
            )
        },
        "/v1/admin/checkpoint": {
            "post": op(
                "post",
                "/v1/admin/checkpoint",
                "Take a checkpoint now",
                {"200": _json(_ref("Checkpoint"), "the checkpoint written")},
                409,
                503,
            )
        },
        "/healthz": {
            "get": op(
                "get",
                "/healthz",
                "Liveness",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "the process runs",
                    )
                },
            )
        },
        "/readyz": {
            "get": op(
                "get",
                "/readyz",
                "Readiness",
                {"200": _json(_ref("Ready"), "restored and caught up")},
                503,
            )
        },
        "/metrics": {
            "get": op(
                "get",
                "/metrics",
                "Prometheus metrics (a secret key with auth.protect_metrics)",
                {
                    "200": _content(
                        "text/plain",
                        "Prometheus text format; under `recsrv run --workers N`, every "
                        "worker's figures, each sample labelled `worker`",
                    )
                },
            )
        },
        "/openapi.json": {
            "get": op(
                "get",
                "/openapi.json",
                "This document",
                {"200": _json({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")},
            )
        },
        "/sdk.js": {
            "get": op(
                "get",
                "/sdk.js",
                "The storefront SDK",
                {"200": _content("application/javascript", "the script")},
            )
        },
        "/demo": {
            "get": op("get", "/demo", "The demo shop", {"200": _content("text/html", "the page")})
        },
        "/demo/catalog.json": {
            "get": op(
                "get",
                "/demo/catalog.json",
                "The demo shop's catalog",
                {"200": _json({"type": "array", "items": CATALOG_ITEM}, "its items")},
            )
        },
        "/static/{name}": {
            "get": op(
                "get",
                "/static/{name}",
                "The demo shop's script and styles",
                {
                    "200": {
                        "description": "the file",
                        "content": {
                            media: {"schema": {"type": "string"}}
                            for media in ("application/javascript", "text/css", "image/png")
                        },
                    }
                },
                404,
                parameters=[
                    _path(
                        "name",
                        "demo.js",
                        {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/]+$"},
                    )
                ],
            )
        },
    }


@cache
def openapi_document(protect_metrics: bool = False) -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsrv",
            "version": __version__,
            "description": "Real-time recommendations for small online shops. With no API "
            "key configured the server runs open: no route asks for a key and nothing is "
            "rate limited; the security requirements below apply once keys are set.",
        },
        "tags": [
            {"name": "open", "description": "no key needed"},
            {"name": "public", "description": "a public or a secret key"},
            {"name": "secret", "description": "a secret key"},
        ],
        "paths": _paths(protect_metrics),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {f"Error{s}": _error_response(s) for s in ERROR_CODES},
        },
    }

"""The OpenAPI 3 description of the REST API, served at /openapi.json."""

from __future__ import annotations

from functools import cache
from typing import Any

from recsrv import __version__
from recsrv.events import EVENT_TYPES

ID = {"type": "string", "minLength": 1, "maxLength": 128}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID}


K = _query("k", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "how many items")
CATEGORY = _query("category", ID, "only items of this catalog category")


def _list_get(summary: str, parameters: list[dict[str, Any]], *errors: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": _json(_ref("RecommendationList"), "ranked items"),
                **_errors(400, *errors),
            },
        }
    }


def _accepted(
    summary: str, parameters: list[dict[str, Any]], method: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "202": _json(_ref("Accepted"), "published; the broker confirmed"),
            **_errors(400, 503),
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
        operation["responses"].update(_errors(413, 415))
    return {method: operation}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ModelInfo": {
        "type": "object",
        "required": ["offset", "events"],
        "properties": {"offset": {"type": "integer"}, "events": {"type": "integer"}},
    },
    "RecommendationList": {
        "type": "object",
        "required": ["items", "strategy", "model"],
        "properties": {
            "items": {
                "type": "array",
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
    "CatalogItem": {
        "type": "object",
        "properties": {
            "item_id": ID,
            "title": {"type": "string", "maxLength": 512},
            "category": ID,
            "price": {"type": "number", "minimum": 0},
            "in_stock": {"type": "boolean", "default": True},
            "url": {"type": "string", "maxLength": 2048},
            "image_url": {"type": "string", "maxLength": 2048},
            "tags": {
                "type": "array",
                "maxItems": 50,
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "properties": {"type": "object"},
        },
    },
    "Item": {
        "type": "object",
        "required": ["item_id", "in_stock", "counters", "model"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "category": {"type": ["string", "null"]},
            "price": {"type": ["number", "null"]},
            "in_stock": {"type": "boolean"},
            "in_catalog": {"type": "boolean"},
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}},
            "popularity": {"type": "number"},
            "model": _ref("ModelInfo"),
        },
    },
    "Event": {
        "type": "object",
        "required": ["type"],
        "description": "An event of design section 3: an interaction (view, click, "
        "add_to_cart, remove_from_cart, purchase, search), catalog.upsert, catalog.delete "
        "or user.forget.",
        "properties": {
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "session_id": ID,
            "user_id": {"type": ["string", "null"], "maxLength": 128},
            "item_id": ID,
            "items": {"type": "array", "maxItems": 500, "items": {"type": "object"}},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 10000},
            "price": {"type": "number", "minimum": 0},
            "query": {"type": "string", "maxLength": 512},
            "ts": {"type": ["number", "string"]},
            "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "properties": {"type": "object"},
            "item": _ref("CatalogItem"),
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "minimum": 0}},
    },
    "Ready": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "offset": {"type": "integer"},
            "end_offset": {"type": ["integer", "null"]},
            "lag": {"type": ["integer", "null"]},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Checkpoint": {
        "type": "object",
        "required": ["id", "offset", "events", "size", "chunks"],
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


@cache
def openapi_document() -> dict[str, Any]:
    rec_params = [
        _query("session_id", ID, "the shopper's session"),
        _query("user_id", ID, "the shopper, when known"),
        _query("item_id", ID, "the item on screen (never recommended itself)"),
        K,
        CATEGORY,
        _query("exclude", {"type": "string"}, "comma-separated item ids to leave out"),
    ]
    events_body = {
        "oneOf": [_ref("Event"), {"type": "array", "maxItems": 1000, "items": _ref("Event")}]
    }
    paths: dict[str, Any] = {
        "/v1/recommendations": _list_get("Personalised recommendations", rec_params),
        "/v1/items/{item_id}/similar": _list_get(
            "Items viewed or clicked together with this one", [_path("item_id"), K], 404
        ),
        "/v1/items/{item_id}/bought-together": _list_get(
            "Items carted or purchased together with this one", [_path("item_id"), K], 404
        ),
        "/v1/popular": _list_get("Trending items, time-decayed", [K, CATEGORY]),
        "/v1/items/{item_id}": {
            "get": {
                "summary": "Catalog entry and counters",
                "parameters": [_path("item_id")],
                "responses": {"200": _json(_ref("Item"), "the item"), **_errors(400, 404)},
            },
            **_accepted("Publish catalog.upsert", [_path("item_id")], "put", _ref("CatalogItem")),
            **_accepted("Publish catalog.delete", [_path("item_id")], "delete"),
        },
        "/v1/users/{user_id}": _accepted("Publish user.forget", [_path("user_id")], "delete"),
        "/v1/events": _accepted("Validate and publish events", [], "post", events_body),
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": _json({"type": "object"}, "the process runs")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": _json(_ref("Ready"), "restored and caught up"),
                    **_errors(503),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/admin/checkpoint": {
            "post": {
                "summary": "Take a checkpoint now (secret key)",
                "responses": {
                    "200": _json(_ref("Checkpoint"), "the checkpoint written"),
                    **_errors(401, 403, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3")},
            }
        },
    }
    statuses = (400, 401, 403, 404, 413, 415, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recsrv",
            "version": __version__,
            "description": "Real-time recommendations for small online shops.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {f"Error{s}": _json(_ref("Error"), f"error {s}") for s in statuses},
        },
    }

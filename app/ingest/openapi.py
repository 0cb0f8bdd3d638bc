"""The OpenAPI 3.0 document of the HTTP API, served at ``GET /openapi.json``.

Written to match the validation in ``app.model.events`` and built from its limit constants; limits
checked in code (string bytes, 64-bit integers, U+0000) are stated in the descriptions. The fuzz
test drives the live API from this document, so a drift shows there.
"""

from __future__ import annotations

from typing import Any

from app.model import events

UUID = {"type": "string", "format": "uuid"}
VALUE = {
    "nullable": True,
    "description": "a JSON scalar; null deletes the key. Strings up to 4 KiB of UTF-8 without "
    "U+0000, integers within 64 bits, finite numbers, booleans",
    "oneOf": [
        {"type": "string", "maxLength": events.MAX_STRING_BYTES},
        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        {"type": "number"},
        {"type": "boolean"},
    ],
}
PROPERTIES = {
    "type": "object",
    "maxProperties": events.MAX_PROPERTIES,
    "additionalProperties": VALUE,
    "propertyNames": {"minLength": 1, "maxLength": events.MAX_KEY_CHARS},
    "description": "keys to set; a null value deletes the key",
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["where", "problem"],
                "properties": {"where": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid request",
        401: "missing or unknown API key",
        403: "key not allowed",
        404: "no such row",
        408: "body not sent within ROWSTREAM_BODY_TIMEOUT",
        413: "body over 1 MiB, or an update larger than the broker accepts",
        429: "the key's rate limit (ROWSTREAM_RATE_LIMIT updates/s per worker, bursts of "
        "ROWSTREAM_RATE_BURST) refused the request whole; retry after Retry-After seconds",
        503: "broker or shard unavailable; retry after Retry-After seconds",
    }
    return {
        str(code): {
            "description": text[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _row_params() -> list[dict]:
    return [
        {"name": name, "in": "path", "required": True, "schema": UUID}
        for name in ("app_id", "subscription_id")
    ]


def document() -> dict[str, Any]:
    accepted = {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "integer", "minimum": 1}},
    }
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["app_id", "subscription_id", "properties"],
        "properties": {
            "app_id": UUID,
            "subscription_id": UUID,
            "properties": {"$ref": "#/components/schemas/Properties"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rowstream",
            "version": "1",
            "description": "Set or delete properties of subscriptions; updates are durable in "
            "Kafka when accepted (202) and applied to Postgres in order per row.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Properties": PROPERTIES, "Error": ERROR, "Update": item},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/apps/{app_id}/subscriptions/{subscription_id}": {
                "parameters": _row_params(),
                "patch": {
                    "summary": "Update one row",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["properties"],
                                    "properties": {
                                        "properties": {"$ref": "#/components/schemas/Properties"}
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "accepted (durable in Kafka)",
                            "content": {"application/json": {"schema": accepted}},
                        },
                        **_errors(400, 401, 403, 408, 413, 429, 503),
                    },
                },
                "get": {
                    "summary": "Read one row as stored in its shard",
                    "responses": {
                        "200": {
                            "description": "the row",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "app_id": UUID,
                                            "subscription_id": UUID,
                                            "properties": {"type": "object"},
                                            "version": {"type": "integer"},
                                            "updated_at": {"type": "string", "format": "date-time"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/v1/updates": {
                "post": {
                    "summary": "Update many rows; all items are validated before any is accepted",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "maxItems": events.MAX_ITEMS,
                                    "items": {"$ref": "#/components/schemas/Update"},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "all accepted (durable in Kafka)",
                            "content": {"application/json": {"schema": accepted}},
                        },
                        **_errors(400, 401, 403, 408, 413, 429, 503),
                    },
                },
            },
        },
    }

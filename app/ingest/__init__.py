"""The HTTP API: validate, authenticate, produce, answer; and its OpenAPI description."""

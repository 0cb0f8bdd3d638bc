"""Metrics, tracing and lag measurement."""

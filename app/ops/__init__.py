"""Operator tools: the CLI commands, the topic reader, stream inspection and text rendering."""

"""Applying updates to Postgres: coalescing, the shard writers, the shard pools and the SQL."""

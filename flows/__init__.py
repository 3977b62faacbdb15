"""Prefect flows: thin tasks that call genlib and pass paths, ids and plain config data."""

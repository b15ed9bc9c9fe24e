"""Temporal workflows: deterministic, importing only routing/ and their own types."""

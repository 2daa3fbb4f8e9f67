"""Fixtures of the builder tests: the cost tests' (tests/support/cost_support.py)."""

from tests.support.cost_support import build, service_env, store, table, table_csv

__all__ = ["build", "service_env", "store", "table", "table_csv"]

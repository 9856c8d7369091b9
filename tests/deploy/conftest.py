"""The production-profile tests' PostgreSQL server (tests/postgres.py): one per test session, a fresh database
per test."""

import secrets

import pytest

from tests.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_database(postgres) -> str:
    """A fresh, empty database on the shared server."""
    name = f"dagster_{secrets.token_hex(4)}"
    postgres.create_database(name)
    return name

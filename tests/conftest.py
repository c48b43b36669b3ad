"""Fixtures shared by several test files: a real PostgreSQL server for the shared run store."""

import pytest

from postgres_server import MISSING, PostgresServer, server_programs


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL server per test session (per pytest-xdist worker); skips the
    tests that need it, saying why, when PostgreSQL's programs are not installed."""
    bindir = server_programs()
    if bindir is None:
        pytest.skip(MISSING)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres):
    """The ``--storage`` URL of a fresh database of its own, owned by the lab's role."""
    return postgres.url(postgres.create_database())

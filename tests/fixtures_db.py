"""Database fixtures: SQLite files and a throwaway PostgreSQL cluster (real servers, never mocks).

`db_url` runs a test once per backend. The PostgreSQL cluster starts once per session; each test gets
its own database in it.
"""

from __future__ import annotations

import itertools

import pytest

from tests.pg_cluster import PgCluster

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = PgCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    return pg_cluster.create_database(f"t{next(_counter)}")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url):
    from source.store.task_store import TaskStore

    s = TaskStore(db_url)
    yield s
    s.close()

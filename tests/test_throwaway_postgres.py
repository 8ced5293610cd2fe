"""The PostgreSQL server of a test's or benchmark's own: started where asked, gone after."""

from __future__ import annotations

import os

import psutil
import pytest
import sqlalchemy

from search.testing.throwaway_postgres import ThrowawayPostgres, missing_reason

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_a_server_on_one_cpu_keeps_its_backends_there_and_cleanup_removes_it() -> None:
    cpu = max(os.sched_getaffinity(0))
    server = ThrowawayPostgres(cpus=str(cpu), durable=True)
    server.init()
    server.start()
    try:
        engine = sqlalchemy.create_engine(
            server.url.replace("postgresql://", "postgresql+psycopg://", 1)
        )
        with engine.connect() as connection:
            backend = connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
            fsync = connection.execute(sqlalchemy.text("SHOW fsync")).scalar_one()
            assert os.sched_getaffinity(backend) == {cpu}  # started for this connection
        engine.dispose()
        assert os.sched_getaffinity(server.pid) == {cpu}
        assert fsync == "on"
        pid = server.pid
    finally:
        server.cleanup()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not server.root.exists()

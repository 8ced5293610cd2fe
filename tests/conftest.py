"""Shared fixtures: a temporary SQLite storage, offline data and a private data cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_SKIP_REASON = "PostgreSQL not answering at 127.0.0.1:5432"


@pytest.fixture(scope="session", autouse=True)
def _offline_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test downloads anything; prepared arrays go to a cache shared by this session."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["CAPSEARCH_OFFLINE"] = "1"
    os.environ.setdefault("CAPSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    if SHARED_DATA.is_dir():
        os.environ.setdefault("CAPSEARCH_DATA", str(SHARED_DATA))


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    """A fresh SQLite storage file for one test."""
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def shared_data() -> Path:
    """The offline copies of the real data sets; the test is skipped where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The PostgreSQL test database, or a skip when the server does not answer."""
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            pass
    except Exception:
        pytest.skip(PG_SKIP_REASON)
    yield PG_URL


def write_study(folder: Path, name: str, text: str) -> Path:
    """Write a study file ``<folder>/<name>.toml`` and return its path."""
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


TINY_MEMORIZE = """
description = "tiny memorize study for tests"
objective = "memorize"
trials = 4

[data]
source = "overfit30"

[training]
epochs = 6
steps_per_epoch = 20
seed = 0

[space]
layers = { low = 1, high = 2 }
units = { low = 4, high = 32, log = true }
l2 = { low = 1e-6, high = 1e-3, log = true, zero = true }
dropout = { choices = [0.0, 0.1] }
batch_size = { choices = [7, 21] }
learning_rate = { low = 1e-3, high = 1e-2, log = true }

[pruner]
name = "median"
n_startup_trials = 2

[[baselines]]
name = "small"
layers = 1
units = 8
l2 = 0.0
dropout = 0.0
batch_size = 21
learning_rate = 0.005
"""

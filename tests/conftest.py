"""Fixtures over testkit's helpers: a tiny generated labelled image folder, a model trained on it
and an index built from it (once per session), a PostgreSQL server, a Milvus server, store URLs of
both backends."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as hashveil.cli does

from pathlib import Path  # noqa: E402

import pytest

from retrieval.core.config import Config
from testkit.data import make_folder_dataset, save_untrained_model, tiny_config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, tiny_data):
    """A tiny dataset with a trained small_cnn model and a built index (built once per session)."""
    from index_builder.build import build_index
    from index_builder.dpsh import train

    cfg = tiny_config(tmp_path_factory.mktemp("work"), tiny_data)
    result = train(cfg)
    build_index(cfg)
    return cfg, result


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for this session (tests/pg.py); fails, never skips, without the binaries."""
    from testkit import postgres as pg

    try:
        server = pg.start_server()
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    pg.stop_server(server)


@pytest.fixture(scope="session")
def milvus_server():
    """A Milvus standalone server for this session (testkit/milvus.py, from the PyPI package `milvus`);
    fails, never skips, when the package is missing or the server does not start."""
    from testkit import milvus

    try:
        server = milvus.start_server()
    except (FileNotFoundError, RuntimeError) as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    milvus.stop_server(server)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """An empty store URL on each backend: a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'test.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture()
def untrained_cfg(tmp_path, tiny_data) -> Config:
    """tiny_config in tmp_path/work with an untrained model: enough to build and serve an index."""
    cfg = tiny_config(tmp_path / "work", tiny_data)
    save_untrained_model(cfg)
    return cfg

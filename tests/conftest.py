"""Fixtures over testkit's helpers: a tiny generated labelled image folder, a model trained on it
and an index built from it (once per session), the service with its pages and a privacy client
pointed at it (``sites``), a PostgreSQL server, a Milvus server, store URLs of both backends."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as hashveil.cli does

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest

from retrieval.core.config import Config
from testkit.data import make_folder_dataset, save_untrained_model, tiny_config


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_hashnet():
    """An untrained, seeded small_cnn HashNet (16 bits, 32 px): what the attack tests attack."""
    import torch

    from retrieval.core.config import ModelConfig
    from retrieval.core.model import HashNet

    torch.manual_seed(0)
    return HashNet(ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32)).eval()


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
def sites(tiny_trained, tmp_path_factory) -> Iterator[dict]:
    """The service with its pages, and `hashveil client` pointed at it, run as a user runs it: its
    own work dir (as on another machine), its launch URL read from what it printed. Every request
    the service receives is recorded (``recorder``); ``token`` is its admin token."""
    import requests

    from retrieval.core.config import override
    from retrieval.service.server import create_app
    from testkit.data import write_config
    from testkit.servers import Recorder, live_server, start_client, stop
    from webui.service import mount_service_pages

    token = "s3cret-admin-token"
    cfg, _ = tiny_trained
    cfg = override(cfg, server={"admin_token": token}, privacy={"eps": 16 / 255, "steps": 200})
    app = create_app(cfg)
    mount_service_pages(app)
    recorder = Recorder(app)
    folder = tmp_path_factory.mktemp("client")
    client_cfg = write_config(folder / "config.toml", override(cfg, paths={"work_dir": folder / "work"}))
    with live_server(recorder) as service_url:
        proc, launch = start_client(client_cfg, service_url)
        try:
            client = requests.Session()  # a script's session: it shows the token once, as the browser does
            assert client.get(launch, timeout=30).status_code == 200
            yield {
                "cfg": cfg,
                "token": token,
                "service": service_url,
                "client": launch.split("/?")[0],
                "launch": launch,
                "client_http": client,
                "recorder": recorder,
                "store": app.extensions["hashveil"]["searcher"].current().store,
            }
        finally:
            stop(proc)


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

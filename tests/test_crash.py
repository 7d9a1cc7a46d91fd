"""Crash safety: SIGKILL the index builder and the server at seeded moments, then look at what is left.

A killed build leaves either no manifest, which open_searcher refuses with a message naming
build-index, or a whole set whose index and store hold the same ids and codes; a rerun always
completes. A killed server leaves a query log whose every row is whole (a code that is the
model's code of the logged upload, results that are stored ids), at least one row per answered
search, and a store that a restarted server serves from.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from retrieval.core.config import Config, override
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.manifest import MANIFEST_FILE
from retrieval.service.search import open_searcher
from retrieval.service.store import Store
from testkit.data import tiny_config, write_config
from testkit.servers import free_port, start_serve
from testkit.servers import stop as stop_server

ROOT = Path(__file__).resolve().parents[1]
RANDOM_KILLS = 3
TOKEN = "crash-test-token"
BUILD_SCRIPT = """
import logging, sys
from index_builder.build import build_index
from retrieval.core.config import load_config
cfg = load_config(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
print("start", flush=True)
build_index(cfg)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Config:
    """small_cnn trained one epoch on the tiny data, with a built set."""
    from index_builder.build import build_index
    from index_builder.dpsh import train

    cfg = override(tiny_config(tmp_path_factory.mktemp("crash"), tiny_data), train={"epochs": 1})
    train(cfg)
    build_index(cfg)
    return cfg


def check_leftover(cfg: Config) -> str:
    """'refused' when no manifest is left, 'whole' when the set loads with index ids == store ids."""
    if not (cfg.work_dir / "index" / MANIFEST_FILE).exists():
        with pytest.raises(FileNotFoundError, match="build-index"):
            open_searcher(cfg)
        return "refused"
    searcher = open_searcher(cfg)
    ids = searcher.index.ids()
    rows = searcher.store.images(ids.tolist())
    assert searcher.store.count() == len(rows) == len(ids) == len(np.unique(ids)) == 200
    for i in ids[:: len(ids) // 20]:  # each stored code finds its own id in the index
        assert i in [h.id for h in searcher.search_code(np.frombuffer(rows[int(i)].code, np.uint8), 0)]
    searcher.store.close()
    return "whole"


def run_build(config_path: Path, delay: float | None, after: str = "start") -> tuple[float, str]:
    """Run a build in a child process and SIGKILL it ``delay`` s after it logs ``after`` (None: let it end).

    Returns the seconds from its "start" line to its end and the last line it wrote.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(config_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen, t0, t1, killed = [], None, None, False
    try:
        while line := proc.stdout.readline():
            seen.append(line)
            t0 = time.perf_counter() if line.strip() == "start" else t0
            t1 = time.perf_counter() if line.strip() == "done" else t1
            if delay is not None and t0 is not None and after in line:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)  # a no-op when the build has ended already
                killed = True
                seen += proc.communicate(timeout=120)[0].splitlines()
                break
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert t0 is not None and (killed if delay is not None else proc.returncode == 0), "".join(seen)[-2000:]
    return (t1 or time.perf_counter()) - t0, seen[-1].strip()


def test_killed_builds_leave_a_refused_or_whole_set_and_a_rerun_completes(trained, tmp_path):
    import shutil

    from index_builder.build import build_index

    cfg = override(trained, paths={"work_dir": tmp_path / "work"})
    shutil.copytree(trained.work_dir / "model", cfg.work_dir / "model")
    config_path = write_config(tmp_path / "config.toml", cfg)
    # a complete set first, so that a kill could leave old and new parts mixed; it also times a build
    build_seconds, last = run_build(config_path, None)
    assert last == "done" and check_leftover(cfg) == "whole"
    rng = random.Random(0)
    # seeded delays, one in each third of [0, 1.2 x build], and two kills right after a write:
    # between the index file and the store, and between the store and the manifest
    points = [(1.2 * build_seconds * (k + rng.random()) / RANDOM_KILLS, "start") for k in range(RANDOM_KILLS)]
    points += [(0.0, "saved flat index"), (0.0, "stored 200 images")]
    outcomes = []
    for delay, after in points:
        _, last = run_build(config_path, delay, after)
        outcomes.append((after, round(delay, 2), last[-50:], check_leftover(cfg)))
    print(f"build {build_seconds:.2f} s; kills (after, delay s, last line, leftover):", *outcomes, sep="\n  ")
    assert "refused" in [o[3] for o in outcomes]  # at least one kill landed inside a build
    result = build_index(cfg)
    assert result.images == 200
    assert check_leftover(cfg) == "whole"


def start_server(config_path: Path, port: int):
    return start_serve(config_path, port, "--threads", "8", env={"HASHVEIL_ADMIN_TOKEN": TOKEN}, timeout=60)


def fire_uploads(
    url: str, uploads: list[bytes], answered: list[str], stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            r = requests.post(url, files={"image": ("q.png", rng.choice(uploads), "image/png")}, timeout=30)
        except requests.RequestException:
            continue  # the server is gone: keep trying until told to stop
        if r.status_code == 200:
            answered.append(r.json()["code"])


def test_server_killed_mid_request_leaves_whole_log_rows_and_restarts(trained, tiny_data, tmp_path):
    cfg = override(trained, server={"port": free_port()})
    config_path = write_config(tmp_path / "config.toml", cfg)
    store = Store(cfg.db_url)
    before = store.query_log_count()
    uploads = [p.read_bytes() for p in sorted((tiny_data / "img").glob("*.png"))[:40]]
    url = f"http://127.0.0.1:{cfg.server.port}/api/search"
    server = start_server(config_path, cfg.server.port)
    answered: list[str] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=fire_uploads, args=(url, uploads, answered, stop, c)) for c in range(12)
    ]
    try:
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while len(answered) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # while the clients still have requests in flight
        server.wait(timeout=30)
        time.sleep(0.2)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        server.kill()
    n_answered = len(answered)
    assert n_answered >= 30

    with sqlite3.connect(cfg.work_dir / "hashveil.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = [r for r in store.query_log(limit=10**6)][: store.query_log_count() - before]
    assert len(rows) >= n_answered  # a search is answered only after its row is committed
    model, _ = load_checkpoint(cfg.work_dir / "model")
    stored = store.images(sorted({i for r in rows for i in r.result_ids}))
    sent = set(uploads)
    for row in rows:  # whole rows: the upload as sent, its model code, stored result ids
        assert row.upload_type == "image" and row.upload in sent
        assert row.code == model.encode(to_tensor(decode_image(row.upload))[None])[0].tobytes()
        assert all(i in stored for i in row.result_ids)
    assert {r.code.hex() for r in rows} >= set(answered)
    print(f"server killed after {n_answered} answered uploads: {len(rows)} whole log rows, integrity ok")

    server = start_server(config_path, cfg.server.port)
    try:
        again = requests.post(url, files={"image": ("q.png", uploads[0], "image/png")}, timeout=30)
        assert again.status_code == 200
        listing = requests.get(
            f"http://127.0.0.1:{cfg.server.port}/api/admin/queries?limit=10000",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ).json()["queries"]
        assert len(listing) == store.query_log_count() == before + len(rows) + 1
        assert listing[0]["code"] == again.json()["code"] and listing[0]["has_upload"]
    finally:
        stop_server(server)

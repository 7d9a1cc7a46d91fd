"""Query-log retention: Store.prune_query_log, QueryLog on a hand-made clock, and the server with 0 days.

Times are set by hand, so "older than N days" is checked against known timestamps, not the wall clock.
"""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.core.config import ServerConfig, override
from retrieval.service.querylog import PRUNE_EVERY, QueryLog
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.service import build_tiny_service

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A settable clock for QueryLog."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'log.sqlite'}")
    s.create()
    return s


def _log(store: Store, created_at: datetime | None = None, upload: bytes | None = b"png") -> int:
    return store.log_query(
        code=b"\x0f\xf0",
        radius=2,
        k=None,
        result_ids=[3, 1],
        upload=upload,
        upload_type="image",
        remote_addr="127.0.0.1",
        created_at=created_at,
    )


def _ids(store: Store) -> list[int]:
    return sorted(r.id for r in store.query_log(limit=10**6))


def test_prune_deletes_exactly_the_rows_before_the_cutoff(store):
    ages = [40, 31, 30.5, 29, 1, 0]  # days before NOW
    ids = {age: _log(store, NOW - timedelta(days=age)) for age in ages}
    gone = store.prune_query_log(NOW - timedelta(days=30))
    assert gone == 3
    assert _ids(store) == sorted(ids[a] for a in (29, 1, 0))
    assert store.query_log_count() == 3
    kept = store.logged_query(ids[29])  # kept rows are whole: time, code, results, upload
    assert kept.created_at == NOW - timedelta(days=29)
    assert (kept.code, kept.result_ids, kept.upload) == (b"\x0f\xf0", (3, 1), b"png")
    assert store.prune_query_log(NOW - timedelta(days=30)) == 0  # idempotent


def test_prune_cutoff_in_another_zone_means_the_same_instant(store):
    a = _log(store, NOW - timedelta(minutes=1))
    b = _log(store, NOW + timedelta(minutes=1))
    plus2 = timezone(timedelta(hours=2))
    assert store.prune_query_log(NOW.astimezone(plus2)) == 1  # 14:00+02:00 == 12:00 UTC
    assert _ids(store) == [b] and a != b


def test_naive_times_are_refused(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        store.prune_query_log(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        _log(store, datetime(2025, 1, 1))


def test_query_log_prunes_at_most_hourly_on_write(store):
    clock = Clock(NOW)
    qlog = QueryLog(store, 7, clock)
    for d in (10, 8):
        _log(store, NOW - timedelta(days=d))
    young = [_log(store, NOW - timedelta(days=d)) for d in (6, 1)]
    assert qlog.prune() == 2  # what create_app does at start
    assert _ids(store) == sorted(young)

    first = qlog.record(
        code=b"\x00\x01", radius=1, k=5, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    assert store.logged_query(first).created_at == NOW  # rows carry the log's clock
    stale = _log(store, NOW - timedelta(days=9))  # e.g. written by another process
    clock.now = NOW + PRUNE_EVERY - timedelta(minutes=1)
    qlog.record(
        code=b"\x00\x02", radius=1, k=None, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    assert stale in _ids(store)  # under an hour since the last prune: no delete
    clock.now = NOW + PRUNE_EVERY + timedelta(minutes=1)
    qlog.record(
        code=b"\x00\x03", radius=1, k=None, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    assert stale not in _ids(store) and first in _ids(store)
    assert store.query_log_count() == 5  # 2 young + 3 recorded

    clock.now = NOW + timedelta(days=7, minutes=1)  # a week on, the first record is past retention
    qlog.record(
        code=b"\x00\x04", radius=1, k=None, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    assert first not in _ids(store)
    assert store.query_log_count() == 3  # the last three records


def test_zero_days_writes_nothing_and_empties_the_log(store):
    _log(store, NOW - timedelta(seconds=1))
    qlog = QueryLog(store, 0, Clock(NOW))
    assert not qlog.enabled
    assert qlog.prune() == 1
    assert (
        qlog.record(
            code=b"\x00\x01",
            radius=1,
            k=None,
            result_ids=[],
            upload=b"x",
            upload_type="image",
            remote_addr=None,
        )
        is None
    )
    assert store.query_log_count() == 0


@pytest.mark.parametrize("bad", [-1, 36501, 1.5, "30", True])
def test_retention_days_is_validated(bad):
    with pytest.raises(ValueError, match="log_retention_days"):
        ServerConfig(log_retention_days=bad)
    with pytest.raises(ValueError, match="retention_days"):
        QueryLog(Store("sqlite://"), bad)


def test_default_is_thirty_days_and_the_toml_agrees():
    from retrieval.core.config import load_config

    assert ServerConfig().log_retention_days == 30
    assert load_config(Path(__file__).parents[1] / "config.toml").server.log_retention_days == 30


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_server_with_zero_days_serves_but_logs_nothing(tmp_path):
    cfg = build_tiny_service(tmp_path)
    store = Store(cfg.db_url)
    _log(store, datetime.now(timezone.utc))  # a row from an earlier run with logging on
    app = create_app(override(cfg, server={"log_retention_days": 0, "admin_token": "t"})).test_client()
    assert store.query_log_count() == 0  # pruned at start
    image = app.post("/api/search", data={"image": (io.BytesIO(_png()), "q.png")})
    code = app.post("/api/search", json={"code": "ffff", "radius": 3})
    assert image.status_code == code.status_code == 200
    assert image.get_json()["code"] and code.get_json()["count"] >= 0
    assert store.query_log_count() == 0
    listing = app.get("/api/admin/queries", headers={"Authorization": "Bearer t"}).get_json()
    assert listing == {"log_retention_days": 0, "queries": []}


def test_server_with_retention_logs_and_keeps_young_rows(tmp_path):
    cfg = build_tiny_service(tmp_path)
    store = Store(cfg.db_url)
    old = _log(store, datetime.now(timezone.utc) - timedelta(days=3))
    young = _log(store, datetime.now(timezone.utc) - timedelta(hours=47))
    app = create_app(override(cfg, server={"log_retention_days": 2, "admin_token": "t"})).test_client()
    assert _ids(store) == [young] and old != young
    assert app.post("/api/search", json={"code": "ffff"}).status_code == 200
    listing = app.get("/api/admin/queries", headers={"Authorization": "Bearer t"}).get_json()
    assert listing["log_retention_days"] == 2
    assert [q["upload_type"] for q in listing["queries"]] == ["code", "image"]


def test_prune_log_command(tmp_path):
    from click.testing import CliRunner

    from hashveil.cli import main

    store = Store(f"sqlite:///{tmp_path / 'hashveil.sqlite'}")  # the default db_url of work_dir
    store.create()
    now = datetime.now(timezone.utc)
    ids = [_log(store, now - timedelta(days=d)) for d in (40, 10, 1)]
    run = CliRunner()
    config = Path(__file__).parents[1] / "config.toml"
    out = run.invoke(main, ["--config", str(config), "--work-dir", str(tmp_path), "prune-log"])
    assert out.exit_code == 0 and "deleted 1 query-log rows older than 30 days" in out.output
    assert _ids(store) == ids[1:]
    out = run.invoke(main, ["--config", str(config), "--work-dir", str(tmp_path), "prune-log", "--days", "0"])
    assert out.exit_code == 0 and "deleted 2" in out.output and store.query_log_count() == 0
    out = run.invoke(
        main, ["--config", str(config), "--work-dir", str(tmp_path), "prune-log", "--days", "-1"]
    )
    assert out.exit_code != 0 and "log_retention_days" in out.output


def test_group_commit_keeps_every_row_and_replies_after_its_commit(db_url):
    """64 requests at once: the first commit is held until the other 63 wait, which then share one
    transaction; each request, once answered, finds its whole row through another connection."""
    store, reader = Store(db_url), Store(db_url)
    store.create()
    qlog = QueryLog(store, 30)
    n, groups, everyone_waits = 64, [], threading.Event()
    commit = store.log_queries

    def held_commit(rows):
        groups.append(len(rows))
        everyone_waits.wait(timeout=60)
        return commit(rows)

    store.log_queries = held_commit
    seen, errors = {}, []

    def request(i: int) -> None:
        try:
            row_id = qlog.record(
                code=bytes([i, 255 - i]),
                radius=i % 5,
                k=None if i % 2 else i + 1,
                result_ids=np.arange(1000 * i, 1000 * i + 3 * i, 3),
                upload=bytes([i]) * (i + 1),
                upload_type="image",
                remote_addr="127.0.0.1",
            )
            seen[i] = reader.logged_query(row_id)  # committed before the answer
        except Exception as e:  # reported below with the request that failed
            errors.append((i, e))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while qlog._writer._queue.qsize() < n - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    everyone_waits.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors and sorted(groups) == [1, n - 1]
    assert len({row.id for row in seen.values()}) == n == store.query_log_count()
    for i, row in seen.items():
        assert (row.code, row.radius, row.k) == (bytes([i, 255 - i]), i % 5, None if i % 2 else i + 1)
        assert row.result_ids == tuple(range(1000 * i, 1000 * i + 3 * i, 3)) and row.upload == bytes([i]) * (
            i + 1
        )
    reader.close()
    store.close()


def test_a_bad_row_fails_its_request_only(store):
    """A row the database refuses inside a group is retried alone: the others of its group commit."""
    qlog = QueryLog(store, 30)
    rows = [{**_row_values(i), "code": None} if i == 3 else _row_values(i) for i in range(6)]  # NOT NULL
    results = qlog._commit(rows)
    assert [isinstance(r, Exception) for r in results] == [False, False, False, True, False, False]
    assert store.query_log_count() == 5


def _row_values(i: int) -> dict:
    from retrieval.service.records import LogEntry, log_values

    return log_values(
        LogEntry(
            code=b"\x00\x01",
            radius=i,
            k=None,
            result_ids=np.arange(i),
            upload=None,
            upload_type="code",
            remote_addr=None,
            created_at=NOW,
        )
    )

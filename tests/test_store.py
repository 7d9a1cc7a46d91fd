"""Store on SQLite and PostgreSQL: images, labels, anchors, fingerprint and query log.

Every ``store`` test runs on both backends (conftest's ``db_url``) and asserts the same numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from retrieval.service.records import ImageRow
from retrieval.service.store import Store

NAMES = ("cat", "dog", "car", "100%_odd")


def _rows(n: int, seed: int = 0, width: int = 4) -> list[ImageRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        labels = tuple(sorted(rng.choice(NAMES, size=rng.integers(1, 3), replace=False).tolist()))
        code = rng.integers(0, 256, width, dtype=np.uint8).tobytes()
        rows.append(
            ImageRow(id=5 * i + 1, path=f"img/{i:05d}.png", labels=labels, split="database", code=code)
        )
    return rows


@pytest.fixture()
def store(db_url) -> Store:
    s = Store(db_url)
    s.create()
    yield s
    s.close()


def test_replace_images_round_trip_and_label_order(store: Store) -> None:
    rows = _rows(50)
    assert store.replace_images(rows, NAMES) == 50
    assert store.count() == 50
    assert store.label_names() == list(NAMES)
    got = store.images([r.id for r in rows[::7]] + [999_999])
    assert set(got) == {r.id for r in rows[::7]}
    for r in rows[::7]:
        assert got[r.id] == r
    want = {n: sum(n in r.labels for r in rows) for n in NAMES}
    assert store.label_counts() == want and list(store.label_counts()) == list(NAMES)


def test_replace_images_is_idempotent_and_replaces(store: Store) -> None:
    store.replace_images(_rows(30, seed=1), NAMES)
    fp = store.fingerprint()
    store.replace_images(_rows(30, seed=1), NAMES)
    assert store.count() == 30 and store.fingerprint() == fp
    store.replace_images(_rows(10, seed=2), ["dog", "cat", "car", "100%_odd"])
    assert store.count() == 10 and store.label_names() == ["dog", "cat", "car", "100%_odd"]
    assert store.images([r.id for r in _rows(30)[10:]]) == {}


def test_replace_images_is_atomic(store: Store) -> None:
    rows = _rows(40, seed=3)
    store.replace_images(rows, NAMES)
    fp = store.fingerprint()
    bad = _rows(12_000, seed=4)  # more than one insert batch, the bad row in the last one
    bad[-1] = ImageRow(bad[-1].id, "x.png", ("no-such-label",), "database", bad[-1].code)
    with pytest.raises(ValueError, match="no-such-label"):
        store.replace_images(bad, NAMES)
    assert store.count() == 40 and store.fingerprint() == fp and store.label_names() == list(NAMES)
    short = _rows(3, seed=5) + [ImageRow(10**6, "y.png", ("cat",), "database", b"\x01\x02")]
    with pytest.raises(ValueError, match="2-byte code; expected 4"):
        store.replace_images(short, NAMES)
    assert store.count() == 40
    with pytest.raises(ValueError, match="distinct"):
        store.replace_images(rows, ["cat", "cat"])


def test_replace_20k_rows_in_batches_keeps_every_row(store: Store) -> None:
    """20,000 rows span several INSERT batches; every one comes back as written (its speed is
    measured by benchmarks/build.py, not asserted here)."""
    rows = _rows(20_000, seed=6)
    assert store.replace_images(rows, NAMES) == 20_000
    assert store.count() == 20_000
    sample = rows[::997]
    got = store.images([r.id for r in sample])
    assert [got[r.id] for r in sample] == sample


def test_codes_with_label_is_deterministic_and_correct(store: Store) -> None:
    rows = _rows(200, seed=7)
    store.replace_images(rows, NAMES)
    by_id = {r.id: r for r in rows}
    for label in NAMES:  # "100%_odd" also checks that LIKE wildcards are escaped
        ids, codes = store.codes_with_label(label, 9, seed=3)
        carrying = [r.id for r in rows if label in r.labels]
        assert len(ids) == min(9, len(carrying)) and ids.dtype == np.int64
        assert set(ids.tolist()) <= set(carrying) and ids.tolist() == sorted(ids.tolist())
        assert codes.shape == (len(ids), 4) and codes.dtype == np.uint8
        for i, code in zip(ids.tolist(), codes):
            assert code.tobytes() == by_id[i].code
        again_ids, again_codes = store.codes_with_label(label, 9, seed=3)
        assert np.array_equal(ids, again_ids) and np.array_equal(codes, again_codes)
    assert (
        store.codes_with_label("cat", 9, seed=1)[0].tolist()
        != store.codes_with_label("cat", 9, seed=2)[0].tolist()
    )
    everything, _ = store.codes_with_label("dog", 10_000, seed=0)
    assert everything.tolist() == [r.id for r in rows if "dog" in r.labels]
    with pytest.raises(ValueError, match="unknown label 'horse'"):
        store.codes_with_label("horse", 3, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        store.codes_with_label("cat", 0, seed=0)


def test_fingerprint_is_sha256_of_ids_and_codes(store: Store) -> None:
    rows = _rows(25, seed=8)
    store.replace_images(list(reversed(rows)), NAMES)
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.id):
        h.update(r.id.to_bytes(8, "little", signed=True) + len(r.code).to_bytes(4, "little") + r.code)
    assert store.fingerprint() == h.hexdigest()
    changed = list(rows)
    flipped = bytes([changed[3].code[0] ^ 1]) + changed[3].code[1:]
    changed[3] = ImageRow(rows[3].id, rows[3].path, rows[3].labels, rows[3].split, flipped)
    store.replace_images(changed, NAMES)
    assert store.fingerprint() != h.hexdigest()
    relabelled = [ImageRow(r.id, "moved/" + r.path, ("cat",), "database", r.code) for r in rows]
    store.replace_images(relabelled, NAMES)
    assert store.fingerprint() == h.hexdigest()  # paths and labels are not part of it


def test_query_log_round_trip(store: Store) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    upload = bytes(range(256)) * 3 + b"\x00\xff"
    a = store.log_query(
        code=b"\x01\x02",
        radius=2,
        k=None,
        result_ids=[5, 1, 9],
        upload=upload,
        upload_type="image",
        remote_addr="10.0.0.7",
    )
    b = store.log_query(
        code=b"\xff\x00", radius=0, k=3, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    assert b > a
    log = store.query_log(limit=10)
    assert [row.id for row in log] == [b, a]  # newest first
    old = log[1]
    assert (old.code, old.radius, old.k, old.result_ids) == (b"\x01\x02", 2, None, (5, 1, 9))
    assert old.upload == upload and old.upload_type == "image" and old.remote_addr == "10.0.0.7"
    assert old.created_at.utcoffset() == timedelta(0)  # UTC on every backend, whatever the server's zone
    assert before <= old.created_at <= datetime.now(timezone.utc)
    assert (log[0].k, log[0].upload, log[0].upload_type) == (3, None, "code")
    assert [row.id for row in store.query_log(limit=1, offset=1)] == [a]
    with pytest.raises(ValueError, match="upload_type"):
        store.log_query(
            code=b"", radius=0, k=None, result_ids=[], upload=None, upload_type="video", remote_addr=None
        )


def test_sqlite_uses_wal_and_json_labels(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db' / 'test.sqlite'}")
    store.create()
    store.replace_images(_rows(3), NAMES)
    con = sqlite3.connect(tmp_path / "db" / "test.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        labels = [json.loads(t) for (t,) in con.execute("SELECT labels FROM images ORDER BY id")]
    finally:
        con.close()
    assert labels == [list(r.labels) for r in _rows(3)]


def test_in_memory_store_is_shared_across_sessions() -> None:
    s = Store("sqlite://")
    s.create()
    s.replace_images(_rows(5), NAMES)
    assert s.count() == 5 and len(s.images([1, 6, 11])) == 3


def test_bad_ids_and_urls() -> None:
    s = Store("sqlite://")
    s.create()
    with pytest.raises(TypeError, match="ints"):
        s.images(["1"])
    with pytest.raises(ValueError, match="url"):
        Store("")


def test_ids_use_64_bits_on_every_backend(store: Store) -> None:
    base = _rows(4, seed=9)
    ids = [-(2**63), -5, 2**40 + 3, 2**63 - 1]  # PostgreSQL's INTEGER would stop at 2**31 - 1
    rows = [ImageRow(i, r.path, r.labels, r.split, r.code) for i, r in zip(ids, base)]
    store.replace_images(rows, NAMES)
    assert store.images(ids) == {r.id: r for r in rows}
    h = hashlib.sha256()
    for r in rows:  # already in id order
        h.update(r.id.to_bytes(8, "little", signed=True) + len(r.code).to_bytes(4, "little") + r.code)
    assert store.fingerprint() == h.hexdigest()
    got, _ = store.codes_with_label(rows[0].labels[0], 10, seed=0)
    assert got.tolist() == [r.id for r in rows if rows[0].labels[0] in r.labels]
    too_big = ImageRow(2**63, "x.png", ("cat",), "database", rows[0].code)
    with pytest.raises(ValueError, match="64 bits"):
        store.replace_images([too_big], NAMES)
    with pytest.raises(ValueError, match="64 bits"):
        store.images([2**64])
    assert store.count() == 4


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("path", "p" * 1025, "at most 1024"),
        ("path", "a\x00b.png", "without NUL"),
        ("split", "s" * 33, "at most 32"),
    ],
)
def test_text_limits_are_checked_alike_on_every_backend(store: Store, field, value, needle) -> None:
    store.replace_images(_rows(5), NAMES)
    fp = store.fingerprint()
    row = _rows(1, seed=10)[0]
    bad = ImageRow(**{**row.__dict__, field: value})
    with pytest.raises(ValueError, match=needle):
        store.replace_images(_rows(3) + [bad], NAMES)
    with pytest.raises(ValueError, match="at most 256"):
        store.replace_images(_rows(3), [*NAMES, "n" * 257])
    assert store.count() == 5 and store.fingerprint() == fp
    longest = ImageRow(row.id, "p" * 1024, row.labels, "s" * 32, row.code)
    store.replace_images([longest], NAMES)
    assert store.images([row.id]) == {row.id: longest}


def test_large_upload_round_trip_and_limit(store: Store, monkeypatch) -> None:
    upload = np.random.default_rng(11).integers(0, 256, 24 * 2**20, dtype=np.uint8).tobytes()
    qid = store.log_query(
        code=b"\x01\x02",
        radius=2,
        k=None,
        result_ids=[1],
        upload=upload,
        upload_type="image",
        remote_addr="::1",
    )
    assert store.logged_upload(qid) == upload
    monkeypatch.setattr("retrieval.service.records.MAX_BLOB_BYTES", 1000)
    with pytest.raises(ValueError, match="1001 bytes is larger than the store's 1000-byte limit"):
        store.log_query(
            code=b"\x01\x02",
            radius=2,
            k=None,
            result_ids=[],
            upload=b"x" * 1001,
            upload_type="image",
            remote_addr=None,
        )
    with pytest.raises(ValueError, match="remote_addr must be at most 64"):
        store.log_query(
            code=b"\x01\x02",
            radius=2,
            k=None,
            result_ids=[],
            upload=None,
            upload_type="code",
            remote_addr="a" * 65,
        )
    assert [row.id for row in store.query_log()] == [qid]


def test_query_log_ids_are_never_reused(store: Store) -> None:
    from sqlalchemy import delete

    from retrieval.service.records import QueryLogRecord

    kw = dict(
        code=b"\x00\x01", radius=1, k=None, result_ids=[], upload=None, upload_type="code", remote_addr=None
    )
    first = [store.log_query(**kw) for _ in range(3)]
    with store.engine.begin() as con:  # as if retention had removed every row
        con.execute(delete(QueryLogRecord))
    again = store.log_query(**kw)
    assert again > max(first)  # an old id never names a different query
    with pytest.raises(KeyError):
        store.logged_query(first[-1])


def test_missing_postgres_binaries_fail_with_the_fix(monkeypatch) -> None:
    from testkit import postgres as pg

    monkeypatch.setattr(pg, "_BIN_GLOB", "/nonexistent/postgresql/*/bin")
    with pytest.raises(FileNotFoundError, match=r"run `make test`"):
        pg.find_bin_dir()


@pytest.mark.slow
def test_build_serve_and_query_log_end_to_end(untrained_cfg, db_url, tiny_data) -> None:
    """build-index into the backend, serve it, search by upload: results and log as on SQLite."""
    from index_builder.build import build_index
    from retrieval.core.codes import hamming
    from retrieval.core.config import override
    from retrieval.core.imaging import decode_image, to_tensor
    from retrieval.core.model import load_checkpoint
    from retrieval.service.server import create_app

    cfg = override(untrained_cfg, index={"db_url": db_url})
    built = build_index(cfg)
    assert built.images == 200 and built.manifest.db_url == db_url
    client = create_app(cfg).test_client()  # opening verifies the manifest against this store
    store = Store(db_url)
    rows = store.images(range(240))
    ids = np.array(sorted(rows))
    data = (tiny_data / rows[ids[7]].path).read_bytes()  # a database image: found at distance 0
    form = {"image": (io.BytesIO(data), "q.png"), "radius": "3", "limit": "200"}  # the whole set in a page
    resp = client.post("/api/search", data=form)
    assert resp.status_code == 200, resp.get_json()
    got = [(r["distance"], r["id"]) for r in resp.get_json()["results"]]
    model, _ = load_checkpoint(cfg.work_dir / "model")
    code = model.encode(to_tensor(decode_image(data))[None])[0]
    dist = hamming(code[None], np.stack([np.frombuffer(rows[i].code, np.uint8) for i in ids]))[0]
    assert got == sorted((int(d), int(i)) for d, i in zip(dist, ids) if d <= 3) and (0, int(ids[7])) in got
    assert resp.get_json()["count"] == len(got)
    logged = store.query_log(limit=10)
    assert len(logged) == 1 and logged[0].upload == data and logged[0].code == code.tobytes()
    assert list(logged[0].result_ids) == [i for _, i in got] and logged[
        0
    ].created_at.utcoffset() == timedelta(0)
    store.close()


def test_a_store_written_before_packed_ids_stays_readable_and_takes_new_rows(db_url) -> None:
    """The query log as hashveil wrote it before: result ids as a JSON text column."""
    from sqlalchemy import (
        Column,
        DateTime,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Table,
        Text,
        create_engine,
    )

    from retrieval.service.records import ID_TYPE

    old = Table(
        "query_log",
        MetaData(),
        Column("id", ID_TYPE, primary_key=True, autoincrement=True),
        Column("created_at", DateTime(timezone=True)),
        Column("code", LargeBinary),
        Column("radius", Integer),
        Column("k", Integer, nullable=True),
        Column("result_ids", Text),
        Column("upload", LargeBinary, nullable=True),
        Column("upload_type", String(16)),
        Column("remote_addr", String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    Store(db_url).create()  # the database (and SQLite's folder); the old table replaces the new one
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE query_log")
    old.create(engine)
    with engine.begin() as conn:
        conn.execute(
            old.insert(),
            {
                "created_at": datetime.now(timezone.utc),
                "code": b"\x01\x02",
                "radius": 2,
                "k": None,
                "result_ids": json.dumps([5, 1, 9]),
                "upload": None,
                "upload_type": "code",
                "remote_addr": None,
            },
        )
    engine.dispose()
    store = Store(db_url)
    store.create()  # creates the missing tables and upgrades the old one, as the server's start does
    big = np.arange(3000, dtype=np.int64) * 7 + 2**33  # ids beyond 32 bits: the int64 form
    new_id = store.log_query(
        code=b"\x03\x04", radius=1, k=None, result_ids=big, upload=None, upload_type="code", remote_addr=None
    )
    new, before = store.query_log(limit=10)
    assert before.result_ids == (5, 1, 9) and new.id == new_id and new.result_ids == tuple(big.tolist())
    assert store.logged_query(before.id).result_ids == (5, 1, 9)
    store.create()  # upgrading twice changes nothing
    assert [r.result_ids for r in store.query_log(limit=10)] == [tuple(big.tolist()), (5, 1, 9)]
    store.close()


def test_result_ids_are_one_packed_array(store: Store) -> None:
    from sqlalchemy import select

    from retrieval.service.records import QueryLogRecord

    ids = [7, 3, 2**32 - 1]
    store.log_query(
        code=b"\x00", radius=0, k=None, result_ids=ids, upload=None, upload_type="code", remote_addr=None
    )
    with store.engine.connect() as conn:
        stored = bytes(conn.execute(select(QueryLogRecord.result_ids)).scalar_one())
    assert stored == b"\x04" + np.array(ids, "<u4").tobytes()  # 4 bytes an id, not JSON or a row each
    with pytest.raises(TypeError, match="ints"):
        store.log_query(
            code=b"\x00",
            radius=0,
            k=None,
            result_ids=[1.5],
            upload=None,
            upload_type="code",
            remote_addr=None,
        )

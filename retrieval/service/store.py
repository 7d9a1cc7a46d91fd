"""The service's metadata: database images, label names in order, and the query log.

The tables (``records``) behind a small :class:`Store`. Every method opens and closes its own
session in one transaction, so a Store can be shared by threads and nothing needs tearing
down per request. Rows leave as frozen dataclasses, never as ORM objects bound to a session.
The query log keeps uploads exactly as received: that retention is the threat the privacy
layer answers, so it is modelled rather than hidden.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, insert, make_url, select
from sqlalchemy import text as sql
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from retrieval.service.records import (
    LABEL_CHARS,
    PATH_CHARS,
    SPLIT_CHARS,
    Base,
    ImageRecord,
    ImageRow,
    LabelRecord,
    LogEntry,
    QueryLogRecord,
    QueryLogRow,
    as_id,
    as_id_array,
    as_utc,
    check_text,
    image_row,
    image_values,
    log_row,
    log_values,
)

log = logging.getLogger(__name__)

BATCH = 5000  # rows per INSERT batch and per streamed read
_IN_CHUNK = 500  # ids per IN (...) clause, below every backend's bound-parameter limit


class Store:
    """Images, labels and query log behind any SQLAlchemy URL (SQLite by default config)."""

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"store url must be a non-empty SQLAlchemy URL; got {url!r}")
        self.url = make_url(url)
        self.engine = _make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    def create(self) -> None:
        """Create the tables that are missing (and the SQLite file's folder)."""
        if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        Base.metadata.create_all(self.engine)
        self.upgrade()

    def close(self) -> None:
        self.engine.dispose()

    def replace_images(self, rows: Iterable[ImageRow], label_names: Sequence[str]) -> int:
        """Swap in a whole new database of images and labels in one transaction; returns the count.

        Readers see either the old set or the new one, never a mix.
        """
        names = list(label_names)
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"label_names must be distinct non-empty strings; got {names!r}")
        for n in names:
            check_text("label name", n, LABEL_CHARS)
        known, count, width = set(names), 0, None
        with self._session() as s, s.begin():
            s.execute(delete(ImageRecord))
            s.execute(delete(LabelRecord))
            if names:
                s.execute(insert(LabelRecord), [{"name": n, "position": i} for i, n in enumerate(names)])
            for batch in _batches(rows, BATCH):
                width = _check_rows(batch, known, width)
                s.execute(insert(ImageRecord), [image_values(r) for r in batch])
                count += len(batch)
        log.info("stored %d images with %d labels", count, len(names))
        return count

    def change_images(self, added: Sequence[ImageRow], removed: Sequence[int]) -> int:
        """Insert ``added`` and delete the ids ``removed`` in one transaction (``hashveil add`` /
        ``remove``); returns the new count. Added rows are checked as in :meth:`replace_images`."""
        gone = [as_id(i) for i in removed]
        with self._session() as s, s.begin():
            known = set(s.scalars(select(LabelRecord.name)))
            _check_rows(list(added), known, None)
            for start in range(0, len(gone), _IN_CHUNK):
                s.execute(delete(ImageRecord).where(ImageRecord.id.in_(gone[start : start + _IN_CHUNK])))
            if added:
                s.execute(insert(ImageRecord), [image_values(r) for r in added])
            count = int(s.scalar(select(func.count()).select_from(ImageRecord)))
        log.info("added %d and removed %d images; %d stored", len(added), len(gone), count)
        return count

    def images(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        """Rows for the given ids; ids that are not stored are absent from the result."""
        wanted = [as_id(i) for i in ids]
        out: dict[int, ImageRow] = {}
        with self._session() as s, s.begin():
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                for rec in s.scalars(select(ImageRecord).where(ImageRecord.id.in_(chunk))):
                    out[rec.id] = image_row(rec)
        return out

    def count(self) -> int:
        with self._session() as s, s.begin():
            return int(s.scalar(select(func.count()).select_from(ImageRecord)))

    def label_names(self) -> list[str]:
        """Label names in their training order (the order of the model's label vectors)."""
        with self._session() as s, s.begin():
            return list(s.scalars(select(LabelRecord.name).order_by(LabelRecord.position)))

    def label_counts(self) -> dict[str, int]:
        """Number of images carrying each label, in label order (0 for unused labels)."""
        with self._session() as s, s.begin():
            names = list(s.scalars(select(LabelRecord.name).order_by(LabelRecord.position)))
            # many images share a label set: count the JSON texts first, parse each once
            texts = Counter(s.scalars(select(ImageRecord.labels)))
        counts = dict.fromkeys(names, 0)
        for text, n in texts.items():
            for name in json.loads(text):
                counts[name] = counts.get(name, 0) + n
        return counts

    def codes_with_label(self, label: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """min(n, available) images carrying ``label``, drawn reproducibly from ``seed``.

        Returns: ids (m,) int64 ascending and their packed codes (m, K/8) uint8.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got {seed!r}")
        if not isinstance(label, str):
            raise TypeError(f"label must be a string; got {label!r}")
        with self._session() as s, s.begin():
            if s.get(LabelRecord, label) is None:
                raise ValueError(f"unknown label {label!r}")
            pattern = ImageRecord.labels.contains(json.dumps(label), autoescape=True)
            found = s.execute(
                select(ImageRecord.id, ImageRecord.labels, ImageRecord.code)
                .where(pattern)
                .order_by(ImageRecord.id)
            ).all()
        found = [(i, c) for i, text, c in found if label in json.loads(text)]
        pick = np.random.default_rng(seed).permutation(len(found))[:n]
        pick.sort()
        ids = np.array([found[p][0] for p in pick], dtype=np.int64)
        width = len(found[0][1]) if found else 0
        codes = np.frombuffer(b"".join(bytes(found[p][1]) for p in pick), dtype=np.uint8)
        return ids, codes.reshape(len(pick), width).copy()

    def label_sets(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        """Every image's id and label set (the JSON text), in id order, in pages of BATCH rows."""
        last = None
        with self._session() as s, s.begin():
            while True:  # keyset pages: bounded memory on any backend
                q = select(ImageRecord.id, ImageRecord.labels).order_by(ImageRecord.id).limit(BATCH)
                page = s.execute(q if last is None else q.where(ImageRecord.id > last)).all()
                if page:
                    yield np.array([r[0] for r in page], np.int64), [r[1] for r in page]
                if len(page) < BATCH:
                    return
                last = page[-1][0]

    def fingerprint(self) -> str:
        """sha256 over every (id, code) in id order: changes whenever any code or id does."""
        with self._session() as s, s.begin():
            return fingerprint_of(self._id_codes(s))

    def _id_codes(self, s) -> Iterator[tuple[int, bytes]]:
        last = None
        while True:  # keyset pages: bounded memory on any backend
            q = select(ImageRecord.id, ImageRecord.code).order_by(ImageRecord.id).limit(BATCH)
            page = s.execute(q if last is None else q.where(ImageRecord.id > last)).all()
            yield from page
            if len(page) < BATCH:
                return
            last = page[-1][0]

    def log_query(
        self,
        *,
        code: bytes,
        radius: int,
        k: int | None,
        result_ids: Sequence[int] | np.ndarray,
        upload: bytes | None,
        upload_type: str,
        remote_addr: str | None,
        created_at: datetime | None = None,
    ) -> int:
        """Record one query (uploaded bytes as received, the whole result); returns the log row's id.

        ``created_at`` (timezone-aware) defaults to now; retention is judged by it.
        """
        entry = LogEntry(
            code=code,
            radius=radius,
            k=k,
            result_ids=as_id_array(result_ids),
            upload=upload,
            upload_type=upload_type,
            remote_addr=remote_addr,
            created_at=datetime.now(timezone.utc) if created_at is None else created_at,
        )
        return self.log_queries([log_values(entry)])[0]

    def log_queries(self, rows: Sequence[dict]) -> list[int]:
        """Insert checked rows (:func:`records.log_values`) in one transaction; their ids, in order.

        The query log's group commit: concurrent requests pay for one commit between them.
        """
        recs = [QueryLogRecord(**values) for values in rows]
        with self._session() as s, s.begin():
            s.add_all(recs)
            s.flush()
            return [int(r.id) for r in recs]

    def upgrade(self) -> None:
        """Bring a store written by an older hashveil up to this one's tables, keeping its rows.

        The query log's ``result_ids`` was a JSON text column and is now a packed id array:
        PostgreSQL converts the column to bytea in place (old rows stay readable JSON bytes);
        SQLite stores either in the column as it is.
        """
        if self.url.get_backend_name() != "postgresql":
            return
        with self.engine.begin() as conn:
            kind = conn.execute(
                sql(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = 'query_log' AND column_name = 'result_ids'"
                )
            ).scalar()
            if kind == "text":
                conn.execute(
                    sql(
                        "ALTER TABLE query_log ALTER COLUMN result_ids TYPE bytea "
                        "USING convert_to(result_ids, 'UTF8')"
                    )
                )
                log.info("upgraded query_log.result_ids in %r from JSON text to packed ids", self)

    def prune_query_log(self, before: datetime) -> int:
        """Delete every logged query created before ``before`` in one transaction; returns the count."""
        cutoff = as_utc(before)
        with self._session() as s, s.begin():
            result = s.execute(delete(QueryLogRecord).where(QueryLogRecord.created_at < cutoff))
        if result.rowcount:
            log.info("pruned %d query-log rows older than %s", result.rowcount, cutoff.isoformat())
        return int(result.rowcount)

    def query_log_count(self) -> int:
        with self._session() as s, s.begin():
            return int(s.scalar(select(func.count()).select_from(QueryLogRecord)))

    def query_log(self, limit: int = 100, offset: int = 0) -> list[QueryLogRow]:
        """Logged queries, newest first."""
        if not isinstance(limit, int) or not isinstance(offset, int) or limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be non-negative ints; got {limit!r}, {offset!r}")
        q = select(QueryLogRecord).order_by(QueryLogRecord.id.desc()).limit(limit).offset(offset)
        with self._session() as s, s.begin():
            return [log_row(r) for r in s.scalars(q)]

    def logged_query(self, query_id: int) -> QueryLogRow:
        """One logged query by id; KeyError when there is none."""
        with self._session() as s, s.begin():
            rec = s.get(QueryLogRecord, as_id(query_id))
            if rec is None:
                raise KeyError(f"no logged query with id {query_id}")
            return log_row(rec)

    def logged_upload(self, query_id: int) -> bytes:
        """The image bytes of one logged query, as received; KeyError says why there are none."""
        row = self.logged_query(query_id)
        if row.upload is None:
            raise KeyError(f"logged query {query_id} was a code query: it has no upload")
        return row.upload


def fingerprint_of(rows: Iterable[tuple[int, bytes]]) -> str:
    """:meth:`Store.fingerprint` of (id, code) pairs given in id order, e.g. to predict it before a change."""
    h = hashlib.sha256()
    for image_id, code in rows:
        h.update(int(image_id).to_bytes(8, "little", signed=True))
        h.update(len(code).to_bytes(4, "little") + bytes(code))
    return h.hexdigest()


def _make_engine(url: str):
    """An engine; SQLite gets WAL and a busy timeout so readers and a writer can overlap."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):  # one shared in-memory database, not one per thread
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return engine


def _batches(rows: Iterable[ImageRow], size: int) -> Iterator[list[ImageRow]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _check_rows(batch: list[ImageRow], known: set[str], width: int | None) -> int | None:
    """Validate a batch before it is written; returns the common code width."""
    for row in batch:
        if not isinstance(row, ImageRow):
            raise TypeError(f"rows must be ImageRow; got {type(row).__name__}")
        unknown = set(row.labels) - known
        if unknown:
            raise ValueError(f"image {row.id} has labels not in label_names: {sorted(unknown)}")
        as_id(row.id)
        check_text(f"image {row.id} path", row.path, PATH_CHARS)
        check_text(f"image {row.id} split", row.split, SPLIT_CHARS)
        width = len(row.code) if width is None else width
        if len(row.code) != width or width == 0:
            raise ValueError(f"image {row.id} has a {len(row.code)}-byte code; expected {width} bytes")
    return width

"""The store's tables (SQLAlchemy 2.x models) and the frozen rows that leave the store, with the
checks both databases (SQLite, PostgreSQL) need before a value is written.

A logged query keeps its whole result (the audit replays it) as one packed array of ids: a width
byte (4: little-endian uint32, 8: int64) and the ids in result order; 2,000 ids take 8 KB. Stores
written before kept a JSON list of ids in that column, which still reads (see :func:`unpack_ids`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UPLOAD_TYPES = ("image", "code")
# SQLite's INTEGER PRIMARY KEY is already 64-bit (and the rowid); PostgreSQL's INTEGER is 32-bit
ID_TYPE = BigInteger().with_variant(Integer, "sqlite")
ID_RANGE = (-(2**63), 2**63 - 1)
MAX_BLOB_BYTES = 1_000_000_000  # SQLite's default SQLITE_MAX_LENGTH; PostgreSQL's bytea stops at 1 GiB
# VARCHAR(n) lengths: PostgreSQL enforces them, SQLite does not, so they are checked before writing
PATH_CHARS, SPLIT_CHARS, LABEL_CHARS, ADDR_CHARS = 1024, 32, 256, 64


class Base(DeclarativeBase):
    pass


class ImageRecord(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=False)
    path: Mapped[str] = mapped_column(String(PATH_CHARS))
    labels: Mapped[str] = mapped_column(Text)  # JSON list of label names
    split: Mapped[str] = mapped_column(String(SPLIT_CHARS))
    code: Mapped[bytes] = mapped_column(LargeBinary)


class LabelRecord(Base):
    __tablename__ = "labels"
    name: Mapped[str] = mapped_column(String(LABEL_CHARS), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, unique=True)


class QueryLogRecord(Base):
    __tablename__ = "query_log"
    # AUTOINCREMENT: SQLite, like a PostgreSQL sequence, never hands out the id of a deleted row again
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    code: Mapped[bytes] = mapped_column(LargeBinary)
    radius: Mapped[int] = mapped_column(Integer)
    k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result_ids: Mapped[bytes] = mapped_column(LargeBinary)  # pack_ids(); a JSON list in older stores
    upload: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    upload_type: Mapped[str] = mapped_column(String(16))
    remote_addr: Mapped[str | None] = mapped_column(String(ADDR_CHARS), nullable=True)


@dataclass(frozen=True)
class ImageRow:
    """One database image; ``path`` is relative to the manifest's image_root."""

    id: int
    path: str
    labels: tuple[str, ...]
    split: str
    code: bytes  # one packed code, K/8 bytes


@dataclass(frozen=True)
class QueryLogRow:
    id: int
    created_at: datetime  # UTC
    code: bytes
    radius: int
    k: int | None
    result_ids: tuple[int, ...]
    upload: bytes | None
    upload_type: str
    remote_addr: str | None


@dataclass(frozen=True)
class LogEntry:
    """One query to log, checked by :func:`log_values` before it joins a group commit."""

    code: bytes
    radius: int
    k: int | None
    result_ids: np.ndarray  # (m,) int64, the whole result in order
    upload: bytes | None
    upload_type: str
    remote_addr: str | None
    created_at: datetime  # timezone-aware


def pack_ids(ids: Sequence[int] | np.ndarray) -> bytes:
    """Ids as one packed array: uint32 when all fit, else int64, after a width byte."""
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size == 0 or (arr.min() >= 0 and arr.max() < 2**32):
        return b"\x04" + arr.astype("<u4").tobytes()
    return b"\x08" + arr.astype("<i8").tobytes()


def unpack_ids(stored: bytes | str) -> tuple[int, ...]:
    """The ids of :func:`pack_ids`, or of the JSON list that stores before it kept."""
    if isinstance(stored, str):  # SQLite hands back the TEXT of a row written before
        return tuple(json.loads(stored))
    stored = bytes(stored)
    if stored[:1] == b"[":  # PostgreSQL: the JSON text, converted to bytea by Store.upgrade()
        return tuple(json.loads(stored))
    width = stored[:1]
    if width not in (b"\x04", b"\x08") or (len(stored) - 1) % stored[0]:
        raise ValueError(f"stored result ids are not a packed id array (starts {stored[:8]!r})")
    return tuple(np.frombuffer(stored, "<u4" if width == b"\x04" else "<i8", offset=1).tolist())


def log_values(entry: LogEntry) -> dict:
    """The column values of one log row, checked alike for both databases."""
    if entry.upload_type not in UPLOAD_TYPES:
        raise ValueError(f"upload_type must be one of {UPLOAD_TYPES}; got {entry.upload_type!r}")
    if entry.upload is not None and len(entry.upload) > MAX_BLOB_BYTES:
        raise ValueError(
            f"upload of {len(entry.upload)} bytes is larger than the store's {MAX_BLOB_BYTES}-byte limit"
        )
    if entry.remote_addr is not None:
        check_text("remote_addr", entry.remote_addr, ADDR_CHARS)
    return {
        "created_at": as_utc(entry.created_at),
        "code": bytes(entry.code),
        "radius": int(entry.radius),
        "k": None if entry.k is None else int(entry.k),
        "result_ids": pack_ids(as_id_array(entry.result_ids)),
        "upload": None if entry.upload is None else bytes(entry.upload),
        "upload_type": entry.upload_type,
        "remote_addr": entry.remote_addr,
    }


def check_text(what: str, value: object, max_chars: int) -> None:
    """Strings both backends store alike: PostgreSQL rejects NUL and enforces VARCHAR lengths."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string; got {value!r}")
    if len(value) > max_chars or "\x00" in value:
        raise ValueError(
            f"{what} must be at most {max_chars} characters without NUL; "
            f"got {len(value)} characters: {value[:80]!r}"
        )


def image_values(row: ImageRow) -> dict:
    return {
        "id": as_id(row.id),
        "path": row.path,
        "labels": json.dumps(list(row.labels)),
        "split": row.split,
        "code": bytes(row.code),
    }


def image_row(rec: ImageRecord) -> ImageRow:
    return ImageRow(rec.id, rec.path, tuple(json.loads(rec.labels)), rec.split, bytes(rec.code))


def log_row(rec: QueryLogRecord) -> QueryLogRow:
    created = rec.created_at
    if created.tzinfo is None:  # SQLite drops the zone; values were written in UTC
        created = created.replace(tzinfo=timezone.utc)
    else:  # PostgreSQL answers in the session's TimeZone setting
        created = created.astimezone(timezone.utc)
    return QueryLogRow(
        rec.id,
        created,
        bytes(rec.code),
        rec.radius,
        rec.k,
        unpack_ids(rec.result_ids),
        None if rec.upload is None else bytes(rec.upload),
        rec.upload_type,
        rec.remote_addr,
    )


def as_utc(when: datetime) -> datetime:
    """An aware datetime in UTC: SQLite stores the wall time without its zone, so all must agree."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"query-log times must be timezone-aware datetimes; got {when!r}")
    return when.astimezone(timezone.utc)


def as_id_array(ids: object) -> np.ndarray:
    """A 1-D int64 array of ids; TypeError for anything but integers (bools included)."""
    try:
        arr = np.asarray(ids)
    except OverflowError:
        raise ValueError("image ids must fit in 64 bits") from None
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"result ids must be a 1-D sequence of ints; got {arr.dtype} of shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.max() > ID_RANGE[1]:
        raise ValueError(f"image ids must fit in 64 bits; got {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def as_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"image ids must be ints; got {value!r}")
    if not ID_RANGE[0] <= int(value) <= ID_RANGE[1]:
        raise ValueError(f"image ids must fit in 64 bits; got {value!r}")
    return int(value)

"""The store's tables (SQLAlchemy 2.x models) and the frozen rows that leave the store, with the
checks both databases (SQLite, PostgreSQL) need before a value is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

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
    result_ids: Mapped[str] = mapped_column(Text)  # JSON list of ids
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
        tuple(json.loads(rec.result_ids)),
        None if rec.upload is None else bytes(rec.upload),
        rec.upload_type,
        rec.remote_addr,
    )


def as_utc(when: datetime) -> datetime:
    """An aware datetime in UTC: SQLite stores the wall time without its zone, so all must agree."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"query-log times must be timezone-aware datetimes; got {when!r}")
    return when.astimezone(timezone.utc)


def as_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"image ids must be ints; got {value!r}")
    if not ID_RANGE[0] <= int(value) <= ID_RANGE[1]:
        raise ValueError(f"image ids must fit in 64 bits; got {value!r}")
    return int(value)

"""Reading a service's query log: from its database (SQLAlchemy URL) or over HTTP from its admin
API (``GET /api/admin/queries`` and ``/api/admin/queries/<id>/upload`` with a bearer token), and
the true labels a user (or a benchmark) knows its own queries carry.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from retrieval.core.api_client import ApiClient
from retrieval.service.records import QueryLogRow
from retrieval.service.store import Store

LOG_FIELDS = ("id", "created_at", "code", "radius", "k", "result_ids", "upload_type", "has_upload")


def read_log_store(db_url: str, limit: int = 100, offset: int = 0) -> list[QueryLogRow]:
    """Logged queries, newest first, straight from the service's database."""
    store = Store(db_url)
    try:
        return store.query_log(limit, offset)
    finally:
        store.close()


def read_log_http(
    server: str,
    token: str,
    limit: int = 100,
    offset: int = 0,
    *,
    uploads: bool = True,
    timeout: float = 30.0,
    verify: bool | str = True,
) -> list[QueryLogRow]:
    """Logged queries from a server's admin API (bearer token), with their uploads when asked;
    ``verify``: an https:// server's certificate check (True or a CA bundle file)."""
    if not token:
        raise ValueError("an admin token is required to read the query log over HTTP")
    api = ApiClient(server, timeout=timeout, token=token, verify=verify)
    body = api.get_json("/api/admin/queries", limit=limit, offset=offset)
    where = f"{api.url}/api/admin/queries"
    if not isinstance(body.get("queries"), list):
        raise ValueError(f'{where} must answer {{"queries": [...]}}; got {str(body)[:200]}')
    rows = []
    for item in body["queries"]:
        missing = [f for f in LOG_FIELDS if not isinstance(item, dict) or f not in item]
        if missing:
            raise ValueError(f"{where}: a query lacks {missing}: {str(item)[:200]}")
        upload = None
        if uploads and item["has_upload"]:
            upload = api.get(f"/api/admin/queries/{int(item['id'])}/upload").content
        rows.append(
            QueryLogRow(
                int(item["id"]),
                datetime.fromisoformat(item["created_at"]),
                bytes.fromhex(item["code"]),
                int(item["radius"]),
                None if item["k"] is None else int(item["k"]),
                tuple(int(i) for i in item["result_ids"]),
                upload,
                item["upload_type"],
                None,
            )
        )
    return rows


def read_true_labels(path: str | Path) -> dict[int, set[str]]:
    """A JSON object {"<log id>": ["label", ...]} or a CSV with header id,labels (labels '|'-separated)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object of id -> labels; got {type(raw).__name__}")
        return {int(key): set(value) for key, value in raw.items()}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [n.strip() for n in reader.fieldnames] != ["id", "labels"]:
            raise ValueError(f"{path}: header must be 'id,labels'; got {reader.fieldnames!r}")
        return {int(row["id"]): {s.strip() for s in row["labels"].split("|") if s.strip()} for row in reader}


def read_groups(path: str | Path) -> dict[int, str]:
    """Which group each logged upload belongs to (e.g. plain, semantic), for the attacker ladder:
    a JSON object {"<log id>": "group"} or a CSV with header id,group."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise ValueError(f"{path} must hold a JSON object of id -> group name")
        return {int(key): value for key, value in raw.items()}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [n.strip() for n in reader.fieldnames] != ["id", "group"]:
            raise ValueError(f"{path}: header must be 'id,group'; got {reader.fieldnames!r}")
        return {int(row["id"]): row["group"].strip() for row in reader}

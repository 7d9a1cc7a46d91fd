"""Connecting to Milvus: URIs, collection names and clients, shared by the index and the builders.

pymilvus is imported on first use, so FAISS users need not install it.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def resolve_uri(uri: str, work_dir: Path) -> str:
    """Config's milvus_uri -> a client uri: "" = a Milvus Lite file in work_dir/index; a relative
    ``*.db`` path is relative to work_dir; ``http(s)://`` (a server or cluster) is kept as it is."""
    if "://" in uri:
        if not uri.startswith(("http://", "https://")):
            raise ValueError(f"milvus_uri must be http(s)://host:port or a local *.db path; got {uri!r}")
        return uri
    path = Path(uri) if uri else Path("index") / "codes.milvus.db"
    if path.suffix != ".db":
        raise ValueError(f"a Milvus Lite path must end in .db; got {uri!r}")
    return str(path if path.is_absolute() else (Path(work_dir) / path).resolve())


def check_collection_name(name: str) -> str:
    """Milvus's rule: a letter or underscore, then letters, digits or underscores (255 at most)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"Milvus collection name must match {_NAME.pattern}; got {name!r}")
    return name


class _QuietMvcc(logging.Filter):
    """Drops pymilvus's warning that Milvus Lite gives its iterators no server timestamp:
    harmless here, as every collection is created with Strong consistency."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


def list_collections(uri: str, *, token: str = "") -> list[str]:
    """Names of the collections at ``uri``."""
    client = _client(uri, token)
    try:
        return sorted(client.list_collections())
    finally:
        client.close()


def drop_collection(uri: str, collection: str, *, token: str = "") -> None:
    """Drop one collection (nothing happens when there is none)."""
    client = connect(uri, token, collection)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
            log.info("dropped Milvus collection %s at %s", collection, uri)
    finally:
        client.close()


def connect(uri: str, token: str, collection: str):
    """A client for ``uri``, after checking the collection name it is for."""
    check_collection_name(collection)
    return _client(uri, token)


def _client(uri: str, token: str):
    """A MilvusClient; ConnectionError (one line) when the server cannot be reached."""
    try:
        from pymilvus import MilvusClient, MilvusException
    except ImportError:
        raise ModuleNotFoundError(
            "index backend 'milvus' needs pymilvus and milvus-lite: pip install 'hashveil[milvus]'"
        ) from None
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    iterator_log = logging.getLogger("pymilvus.orm.iterator")
    if _QuietMvcc not in map(type, iterator_log.filters):
        iterator_log.addFilter(_QuietMvcc())
    with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources, which warns
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            return MilvusClient(uri=uri, token=token)
        except MilvusException as e:
            raise ConnectionError(f"cannot connect to Milvus at {uri}: {e.message}") from None

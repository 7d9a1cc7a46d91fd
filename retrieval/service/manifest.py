"""The manifest binds one model, one index (a FAISS file or a Milvus collection) and one store
into a set that belongs together.

``build-index`` writes it last, after the index and the store are complete; the server reads
it first and refuses to serve a set whose parts changed since (new weights, a half-written
index, a store rebuilt by another run), since codes from one model are meaningless against an
index built by another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from retrieval.core.model import file_sha256
from retrieval.service.store import Store

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What build-index produced; ``index_file`` is a file name in the manifest's folder.

    With ``index_backend`` "milvus" the index is collection ``milvus_collection`` at
    ``milvus_uri`` instead (``index_file`` and ``index_sha256`` are empty): it is checked by
    its (id, code) fingerprint, which must equal the store's. The token is never recorded.
    """

    model_sha256: str
    hash_bits: int
    index_file: str
    index_kind: str
    index_sha256: str
    count: int
    store_fingerprint: str
    db_url: str
    image_root: str  # absolute; database image paths are relative to it
    dataset: str
    created: str  # ISO 8601, UTC
    index_backend: str = "faiss"  # manifests written before the Milvus backend have none
    milvus_uri: str = ""
    milvus_collection: str = ""

    def __post_init__(self) -> None:
        name = self.index_file
        if self.index_backend == "milvus":
            if name or not self.milvus_uri or not self.milvus_collection:
                raise ValueError(
                    f"a milvus manifest needs milvus_uri and milvus_collection and no "
                    f"index_file; got {self.milvus_uri!r}, {self.milvus_collection!r}, {name!r}"
                )
        elif self.index_backend != "faiss":
            raise ValueError(f"index_backend must be 'faiss' or 'milvus'; got {self.index_backend!r}")
        elif not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"index_file must be a plain file name; got {name!r}")
        for key in ("hash_bits", "count"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"manifest {key} must be a non-negative int; got {value!r}")

    def index_path(self, manifest_dir: str | Path) -> Path:
        """Where the index file lies, given the folder that holds the manifest."""
        return Path(manifest_dir) / self.index_file


def write_manifest(path: str | Path, m: Manifest) -> None:
    """Write atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(m), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote manifest %s (%d items, %s index)", path, m.count, m.index_kind)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest; FileNotFoundError says how to make one, ValueError names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no index manifest at {path}; run `hashveil build-index` first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"manifest {path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"manifest {path} must hold a JSON object; got {type(raw).__name__}")
    fields = {f.name for f in dataclasses.fields(Manifest)}
    required = {f.name for f in dataclasses.fields(Manifest) if f.default is dataclasses.MISSING}
    missing, unknown = required - set(raw), set(raw) - fields
    if missing or unknown:
        raise ValueError(
            f"manifest {path} has missing fields {sorted(missing)} and unknown fields {sorted(unknown)}"
        )
    try:
        return Manifest(**raw)
    except ValueError as e:
        raise ValueError(f"manifest {path}: {e}") from None


def verify(
    m: Manifest,
    *,
    model_sha256: str,
    store: Store,
    index_path: str | Path | None = None,
    index_fingerprint: str | None = None,
) -> None:
    """Raise ValueError naming the first part of the set that no longer matches the manifest.

    A FAISS set is checked by ``index_path`` (the file's sha256); a Milvus set by
    ``index_fingerprint``, the collection's (id, code) fingerprint, against the store's.
    """
    if model_sha256 != m.model_sha256:
        raise ValueError(
            f"model weights changed since the index was built: weights sha256 "
            f"{model_sha256}, manifest expects {m.model_sha256}; run `hashveil build-index` again"
        )
    if m.index_backend == "milvus":
        _verify_store(m, store)
        if index_fingerprint != m.store_fingerprint:
            raise ValueError(
                f"Milvus collection {m.milvus_collection!r} at {m.milvus_uri} does not hold "
                f"the store's ids and codes (fingerprint {index_fingerprint}, manifest expects "
                f"{m.store_fingerprint}); run `hashveil build-index` again"
            )
        return
    if index_path is None:
        raise TypeError("verify needs index_path for a FAISS manifest")
    index_path = Path(index_path)
    if not index_path.is_file():
        raise ValueError(f"index file {index_path} named by the manifest is missing")
    digest = file_sha256(index_path)
    if digest != m.index_sha256:
        raise ValueError(
            f"index file {index_path} has sha256 {digest}, manifest expects "
            f"{m.index_sha256} (half-written or replaced?); run `hashveil build-index` again"
        )
    _verify_store(m, store)


def _verify_store(m: Manifest, store: Store) -> None:
    count = store.count()
    if count != m.count:
        raise ValueError(f"store {store!r} holds {count} images, manifest expects {m.count}")
    fingerprint = store.fingerprint()
    if fingerprint != m.store_fingerprint:
        raise ValueError(
            f"store {store!r} codes differ from the build (fingerprint {fingerprint}, "
            f"manifest expects {m.store_fingerprint}); run `hashveil build-index` again"
        )

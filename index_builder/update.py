"""Change a built collection without a rebuild: ``hashveil add PATH...`` and ``hashveil remove ID...``.

The index file, the store and the manifest change together or not at all, with a journal:

1. take ``index/update.lock`` (one update at a time) and finish or undo an interrupted update;
2. verify the set as the server does (weights, index file, store), and check the new images
   as a build would (inside the indexed folder, read by its layout, labels the index knows);
3. hash them with the model, write the new index under a new file name, predict the store's
   new fingerprint, and write ``index/update.json`` (the old and the new manifest);
4. change the store in one transaction;
5. write the new manifest (atomic rename), then drop the journal and the old index file.

A crash before step 4 leaves the old set as it was; after it, :func:`recover` (run by every
update and by ``hashveil serve``) completes step 5. A running server swaps in the new set at its
check of the manifest after step 5 (``retrieval.service.reload``, every ``server.reload_seconds``). FAISS sets only: a Milvus collection is
changed by ``build-index``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from index_builder.build import hash_database
from index_builder.collection import check_new_images
from index_builder.datasets import open_collection
from retrieval.core.config import Config
from retrieval.core.model import HashNet, file_sha256, load_checkpoint
from retrieval.service.index import BinaryIndex
from retrieval.service.manifest import MANIFEST_FILE, Manifest, read_manifest, verify, write_manifest
from retrieval.service.records import ImageRow
from retrieval.service.store import Store, fingerprint_of

log = logging.getLogger(__name__)

JOURNAL_FILE = "update.json"
LOCK_FILE = "update.lock"
NEXT_ID_FILE = "next_id.json"  # the id after the largest ever added, so removed ids stay retired
LOCK_WAIT_S = 30


@dataclass(frozen=True)
class UpdateResult:
    added: list[tuple[int, str]]  # (new id, path relative to the image root)
    removed: list[int]
    already: list[tuple[int, str]]  # named images that were indexed already: left as they are
    skipped: dict[str, int]  # files inside named folders that are not images of the collection
    manifest: Manifest


def add_images(cfg: Config, paths: list[str | Path]) -> UpdateResult:
    """Index image files (or every image in named folders) that lie inside the indexed folder."""
    with _locked(cfg):
        m, model, store, index = _open_set(cfg)
        rows = store.images(index.ids().tolist())
        images = open_collection(m.dataset, Path(m.image_root), cfg.data.layout)
        known = tuple(store.label_names())
        if images.label_names != known:
            raise ValueError(
                f"{m.image_root} read as layout {cfg.data.layout!r} has labels {list(images.label_names)[:8]}; "
                f"the index has {list(known)[:8]}: pass the --layout the index was built with"
            )
        new, already, skipped = check_new_images(images, paths, {r.path: i for i, r in rows.items()})
        if not new:
            return UpdateResult([], [], already, skipped, m)
        codes = hash_database(cfg, model, images, np.asarray(new), use_cache=False, desc="hash new images")
        first = max(max(rows, default=-1) + 1, _next_id(cfg))  # ids of removed images are never reused
        _write_json(cfg.work_dir / "index" / NEXT_ID_FILE, {"next_id": first + len(new)})
        label_sets = images.label_sets(new)
        added = [
            ImageRow(first + r, images.paths[i], tuple(lab), "database", codes[r].tobytes())
            for r, (i, lab) in enumerate(zip(new, label_sets))
        ]
        manifest = _commit(cfg, m, store, index, rows, added, [])
        return UpdateResult([(r.id, r.path) for r in added], [], already, skipped, manifest)


def remove_images(cfg: Config, ids: list[int]) -> UpdateResult:
    """Take database images out of the index and the store; their files stay where they are."""
    with _locked(cfg):
        m, _, store, index = _open_set(cfg)
        wanted = sorted(set(int(i) for i in ids))
        rows = store.images(index.ids().tolist())
        unknown = [i for i in wanted if i not in rows]
        if unknown:
            raise ValueError(f"no indexed image has id {unknown[:10]}; nothing was removed")
        manifest = _commit(cfg, m, store, index, rows, [], wanted)
        return UpdateResult([], wanted, [], {}, manifest)


def recover(cfg: Config) -> str | None:
    """Finish or undo an update that was interrupted; returns what was done (None: nothing to do)."""
    index_dir = cfg.work_dir / "index"
    journal = index_dir / JOURNAL_FILE
    if not journal.is_file():
        return None
    try:
        raw = json.loads(journal.read_text(encoding="utf-8"))
        old, new = Manifest(**raw["old"]), Manifest(**raw["new"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"unreadable update journal {journal}: {e}; run `hashveil build-index` again"
        ) from None
    fingerprint = Store(new.db_url).fingerprint()
    if fingerprint == new.store_fingerprint:
        keep, drop, done = new, old, "finished the interrupted update"
    elif fingerprint == old.store_fingerprint:
        keep, drop, done = old, new, "undid the interrupted update"
    elif _current_set_is_whole(cfg):  # a build-index since: the journal is stale
        journal.unlink()
        return "dropped a stale update journal"
    else:
        raise ValueError(
            f"the store {new.db_url} matches neither side of the interrupted update in {journal}; "
            "run `hashveil build-index` again"
        )
    if not (index_dir / keep.index_file).is_file():
        raise ValueError(
            f"index file {keep.index_file} of the update journal is missing; run build-index again"
        )
    _write_manifest_if_changed(index_dir / MANIFEST_FILE, keep)
    journal.unlink()
    if drop.index_file != keep.index_file:
        (index_dir / drop.index_file).unlink(missing_ok=True)
    log.warning("%s in %s", done, index_dir)
    return done


@contextmanager
def _locked(cfg: Config) -> Iterator[None]:
    """Hold the update lock, with any interrupted update recovered first."""
    index_dir = cfg.work_dir / "index"
    index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(index_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout:
        raise ValueError(
            f"another hashveil add/remove holds {lock.lock_file} (waited {LOCK_WAIT_S} s)"
        ) from None
    try:
        recover(cfg)
        yield
    finally:
        lock.release()


def _open_set(cfg: Config) -> tuple[Manifest, HashNet, Store, BinaryIndex]:
    """The verified set of work_dir: manifest, model, store and FAISS index."""
    m = read_manifest(cfg.work_dir / "index" / MANIFEST_FILE)
    if m.index_backend != "faiss":
        raise ValueError(
            f"hashveil add/remove change FAISS indexes only; this index is a {m.index_backend} collection: "
            "change the folder and run `hashveil build-index` again"
        )
    model, card = load_checkpoint(cfg.work_dir / "model", device=cfg.model.device)
    store = Store(m.db_url)
    where = m.index_path(cfg.work_dir / "index")
    verify(m, model_sha256=card.sha256, index_path=where, store=store)
    return m, model, store, BinaryIndex.load(where)


def _commit(
    cfg: Config,
    m: Manifest,
    store: Store,
    index: BinaryIndex,
    rows: dict[int, ImageRow],
    added: list[ImageRow],
    removed: list[int],
) -> Manifest:
    """Steps 3 to 5 of the module docstring."""
    index_dir = cfg.work_dir / "index"
    gone = set(removed)
    final = {i: r.code for i, r in rows.items() if i not in gone}
    final.update({r.id: r.code for r in added})
    ids = np.array(sorted(final), dtype=np.int64)
    fresh = BinaryIndex.create(m.hash_bits, m.index_kind)  # as build-index makes it
    if len(ids):
        fresh.add(
            np.frombuffer(b"".join(final[i] for i in ids.tolist()), np.uint8).reshape(len(ids), -1), ids
        )
    name = f"codes-{uuid.uuid4().hex[:12]}.faiss"
    fresh.save(index_dir / name)
    new = dataclasses.replace(
        m,
        index_file=name,
        index_sha256=file_sha256(index_dir / name),
        count=len(ids),
        store_fingerprint=fingerprint_of((i, final[i]) for i in ids.tolist()),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    journal = index_dir / JOURNAL_FILE
    _write_json(journal, {"old": dataclasses.asdict(m), "new": dataclasses.asdict(new)})
    store.change_images(added, removed)
    write_manifest(index_dir / MANIFEST_FILE, new)
    journal.unlink()
    if m.index_file != name:
        (index_dir / m.index_file).unlink(missing_ok=True)
    return new


def _next_id(cfg: Config) -> int:
    try:
        value = json.loads((cfg.work_dir / "index" / NEXT_ID_FILE).read_text(encoding="utf-8"))["next_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _current_set_is_whole(cfg: Config) -> bool:
    try:
        _open_set(cfg)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _write_manifest_if_changed(path: Path, m: Manifest) -> None:
    try:
        if read_manifest(path) == m:
            return
    except (FileNotFoundError, ValueError):
        pass
    write_manifest(path, m)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(payload, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

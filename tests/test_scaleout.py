"""Several search servers, one store: two `hashveil serve` processes share one PostgreSQL database
and one collection on a Milvus standalone server, as a scaled-out deployment does.

They answer the same queries identically (and as a brute-force scan of the store's codes says),
the query log gets every answered search exactly once, and a build that replaces the index while
they serve is switched to whole: every answer is the old set's or the new set's, never an error
or a mix (the new model with the old collection, or a half-written collection).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from index_builder.build import build_index
from retrieval.core.config import Config, override
from retrieval.core.imaging import load_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.service.manifest import read_manifest
from retrieval.service.milvus_client import list_collections
from retrieval.service.store import Store
from testkit.codes import brute
from testkit.data import save_untrained_model, tiny_config, write_config
from testkit.servers import free_port, start_serve, stop

pytestmark = pytest.mark.slow
BITS = 16


@dataclass
class Cluster:
    cfg: Config
    urls: list[str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_data, postgres, milvus_server):
    """An untrained tiny set built into PostgreSQL + the Milvus server, served by two processes."""
    root = tmp_path_factory.mktemp("cluster")
    cfg = override(
        tiny_config(root / "work", tiny_data),
        index={
            "backend": "milvus",
            "milvus_uri": milvus_server.uri,
            "milvus_collection": "scaleout",
            "db_url": postgres.new_database("scaleout"),
        },
        server={"reload_seconds": 0.2},
    )
    save_untrained_model(cfg)
    build_index(cfg)
    path = write_config(root / "config.toml", cfg)
    ports = [free_port(), free_port()]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda p: start_serve(path, p, "--threads", "4"), ports))
    try:
        yield Cluster(cfg, [f"http://127.0.0.1:{p}" for p in ports])
    finally:
        for proc in procs:
            stop(proc)


def _stored(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Every database id and code in the shared store. Shape: (n,) and (n, K/8)."""
    store = Store(cfg.db_url)
    rows = store.images(range(1000))
    store.close()
    ids = np.array(sorted(rows), dtype=np.int64)
    return ids, np.stack([np.frombuffer(rows[i].code, np.uint8) for i in ids])


def _expected(code: np.ndarray, ids, codes, radius: int, k: int | None) -> list[tuple[int, int]]:
    """(id, distance) of a brute-force scan: within radius, nearest first, ties by id, cut to k."""
    got_ids, got_d = brute(code, codes, ids)
    keep = got_d <= radius
    pairs = list(zip(got_ids[keep].tolist(), got_d[keep].tolist()))
    return pairs if k is None else pairs[:k]


PAGE = 1000  # the server's max_k: every answer here is its whole result in one page


def _ask(url: str, query: dict) -> tuple[int, dict]:
    """POST one query: {"path": image file, "radius"} as an upload, else {"code", "radius", "k"} as JSON."""
    if "path" in query:
        data = {"radius": str(query["radius"]), "limit": str(PAGE)}
        files = {"image": ("q.png", query["path"].read_bytes(), "image/png")}
        resp = requests.post(f"{url}/api/search", files=files, data=data, timeout=60)
    else:
        body = {"limit": PAGE, **{key: value for key, value in query.items() if value is not None}}
        resp = requests.post(f"{url}/api/search", json=body, timeout=60)
    return resp.status_code, resp.json()


def _upload(query: dict) -> bytes | None:
    return query["path"].read_bytes() if "path" in query else None


def _pairs(answer: dict) -> list[tuple[int, int]]:
    return [(r["id"], r["distance"]) for r in answer["results"]]


def _image_files(tiny_data: Path, n: int) -> list[Path]:
    return sorted((tiny_data / "img").glob("*.png"))[:n]


def test_two_servers_answer_alike_and_log_every_search_once(cluster, tiny_data) -> None:
    cfg = cluster.cfg
    ids, codes = _stored(cfg)
    model, _ = load_checkpoint(cfg.work_dir / "model")
    rng = np.random.default_rng(7)
    queries = [
        {"code": rng.integers(0, 256, BITS // 8, dtype=np.uint8).tobytes().hex(), "radius": int(r), "k": k}
        for r, k in zip(rng.integers(0, 5, 24), [None, 3] * 12)
    ] + [{"path": path, "radius": 3} for path in _image_files(tiny_data, 6)]
    store = Store(cfg.db_url)
    before = store.query_log_count()
    jobs = [(url, q) for q in queries for url in cluster.urls]
    with ThreadPoolExecutor(8) as pool:  # concurrent, interleaved across both servers
        answers = list(pool.map(lambda job: _ask(*job), jobs))

    assert [status for status, _ in answers] == [200] * len(jobs)
    for i, q in enumerate(queries):
        first, second = answers[2 * i][1], answers[2 * i + 1][1]
        assert first == second  # the two servers, byte for byte the same answer
        if "path" in q:
            code = model.encode(to_tensor(load_image(q["path"]))[None])[0]
            assert first["code"] == code.tobytes().hex()
        else:
            code = np.frombuffer(bytes.fromhex(q["code"]), np.uint8)
        expected = _expected(code, ids, codes, q["radius"], q.get("k"))
        assert first["count"] == len(expected) and _pairs(first) == expected
    assert sum(len(a["results"]) for _, a in answers) > 0

    # every answered search is in the shared log exactly once, under an id no other row has
    rows = store.query_log(limit=len(jobs) + 10)[: store.query_log_count() - before]
    assert len(rows) == len(jobs) and len({r.id for r in rows}) == len(jobs)
    logged = Counter((r.code.hex(), r.radius, r.k, tuple(r.result_ids), r.upload) for r in rows)
    sent = Counter(
        (a["code"], q["radius"], q.get("k"), tuple(i for i, _ in _pairs(a)), _upload(q))
        for (_, a), (_, q) in zip(answers, jobs)
    )
    assert logged == sent
    store.close()


def _hammer(url: str, queries: list[dict], stop_at: threading.Event, out: list) -> None:
    """One client per server, one request at a time: answers come back in the order they were served."""
    while not stop_at.is_set():
        for i, q in enumerate(queries):
            try:
                status, answer = _ask(url, q)
                out.append((i, status, answer.get("code"), _pairs(answer) if status == 200 else answer))
            except requests.RequestException as e:
                out.append((i, -1, None, repr(e)))


def test_a_rebuild_while_serving_is_switched_to_whole(cluster, tiny_data) -> None:
    cfg = cluster.cfg
    _, stored = _stored(cfg)
    queries = [{"code": code.tobytes().hex(), "radius": 3} for code in stored[::37]]  # 6 old codes
    queries += [{"path": p, "radius": 3} for p in _image_files(tiny_data, 2)]

    def expected() -> list[tuple[str, list]]:
        """What each query's answer is on the set in work_dir now: (code hex, (id, distance) pairs)."""
        ids, codes = _stored(cfg)
        model, _ = load_checkpoint(cfg.work_dir / "model")
        out = []
        for q in queries:
            if "path" in q:
                code = model.encode(to_tensor(load_image(q["path"]))[None])[0]
            else:
                code = np.frombuffer(bytes.fromhex(q["code"]), np.uint8)
            out.append((code.tobytes().hex(), _expected(code, ids, codes, 3, None)))
        return out

    old, old_collection = (
        expected(),
        read_manifest(cfg.work_dir / "index" / "manifest.json").milvus_collection,
    )
    stop_at = threading.Event()
    seen: dict[str, list] = {url: [] for url in cluster.urls}
    clients = [threading.Thread(target=_hammer, args=(u, queries, stop_at, seen[u])) for u in cluster.urls]
    for t in clients:
        t.start()
    try:
        time.sleep(1.0)
        save_untrained_model(cfg, seed=1)  # a retrained model: every code changes
        build_index(cfg)
        new = expected()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(_switched(seen[u], new) for u in cluster.urls):
            time.sleep(0.2)
    finally:
        stop_at.set()
        for t in clients:
            t.join(60)

    assert sum(a != b for a, b in zip(old, new)) >= len(queries) // 2  # the rebuild changed the answers
    for url, answers in seen.items():
        assert [a for a in answers if a[1] != 200] == []  # no error while the build ran or at the switch
        sets = [
            "old" if (code, pairs) == old[i] else "new" if (code, pairs) == new[i] else "neither"
            for i, _, code, pairs in answers
        ]
        assert "neither" not in sets  # never a half-written collection, never a new model on old codes
        first_new = sets.index("new")
        assert "old" in sets[:first_new] and set(sets[first_new:]) == {"new"}, url  # one switch, for good
    assert old_collection in list_collections(cfg.index.milvus_uri)  # kept for servers yet to switch


def _switched(answers: list, new: list) -> bool:
    """The last full round of a server's answers is the new set's."""
    tail = answers[-len(new) :]
    return len(tail) == len(new) and all((code, pairs) == new[i] for i, _, code, pairs in tail)

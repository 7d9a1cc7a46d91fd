"""The JSON API through app.test_client() on a tiny service built from scratch.

References are independent of the server: the model's code of the decoded upload and a
brute-force Hamming scan over the codes in the store.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from retrieval.core.codes import hamming, to_hex
from retrieval.core.config import Config, override
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import file_sha256, load_checkpoint
from retrieval.service.manifest import Manifest, read_manifest, verify, write_manifest
from retrieval.service.records import ImageRow
from retrieval.service.search import open_searcher
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.service import BITS, LABELS, N_IMAGES, build_tiny_service, random_png


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Config:
    return build_tiny_service(tmp_path_factory.mktemp("tiny_service"))


@pytest.fixture(scope="module")
def client(service):
    app = create_app(service)
    return app.test_client()


@pytest.fixture(scope="module")
def db(service) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes) of the whole database, read straight from the store."""
    rows = Store(service.db_url).images(range(1000, 1000 + 7 * N_IMAGES, 7))
    ids = np.array(sorted(rows), dtype=np.int64)
    return ids, np.array([np.frombuffer(rows[i].code, np.uint8) for i in ids])


def _brute(code: np.ndarray, db, radius: int, k: int | None = None) -> list[tuple[int, int]]:
    ids, codes = db
    d = hamming(code.reshape(1, -1), codes)[0]
    order = np.lexsort((ids, d))
    hits = [(int(ids[j]), int(d[j])) for j in order if d[j] <= radius]
    return hits if k is None else hits[:k]


def _pairs(resp) -> list[tuple[int, int]]:
    """The (id, distance) pairs of one answer's page."""
    return [(r["id"], r["distance"]) for r in resp.get_json()["results"]]


def _whole(client, code: str, **params) -> list[tuple[int, int]]:
    """Every (id, distance) of a code query's result, read in pages of 7 by offset."""
    pairs: list[tuple[int, int]] = []
    while True:
        body = client.post("/api/search", json={"code": code, **params, "offset": len(pairs), "limit": 7})
        assert body.status_code == 200, body.get_json()
        page = _pairs(body)
        pairs += page
        if len(page) < 7:
            assert body.get_json()["count"] == len(pairs)
            return pairs


def _log_count(service: Config) -> int:
    return len(Store(service.db_url).query_log(limit=10**6))


def test_upload_search_matches_brute_force_on_the_decoded_image(client, service, db) -> None:
    data = (service.work_dir / "images" / "017.png").read_bytes()
    model, _ = load_checkpoint(service.work_dir / "model")
    want_code = model.encode(to_tensor(decode_image(data))[None])[0]
    before = _log_count(service)
    resp = client.post("/api/search", data={"image": (io.BytesIO(data), "q.png"), "radius": "3"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["code"] == to_hex(want_code) and body["radius"] == 3 and body["k"] is None
    want = _brute(want_code, db, 3)
    assert body["count"] == body["within_radius"] == len(want) > service.server.max_k  # more than a page
    assert (body["offset"], body["limit"]) == (0, service.server.max_k)  # page_size, at most max_k
    assert _pairs(resp) == want[: service.server.max_k] and (1000 + 7 * 17, 0) in want
    first = body["results"][0]
    assert first["image_url"] == f"/api/images/{first['id']}" and set(first["labels"]) <= set(LABELS)
    log = Store(service.db_url).query_log(limit=1)[0]
    assert _log_count(service) == before + 1
    assert log.upload == data and log.upload_type == "image" and log.radius == 3
    assert log.code == want_code.tobytes() and list(log.result_ids) == [h[0] for h in want]  # not a page
    assert _whole(client, body["code"], radius=3) == want  # later pages, by the answer's code


def test_code_query_radius_edge_against_brute_force(client, service, db) -> None:
    code = db[1][5]
    d = np.sort(hamming(code[None], db[1])[0])
    r = next(int(x) for x in d if x > 0 and x + 1 in d)  # a radius with items at r and r + 1
    at_r, at_r1 = _whole(client, to_hex(code), radius=r), _whole(client, to_hex(code), radius=r + 1)
    assert at_r == _brute(code, db, r)
    assert at_r1 == _brute(code, db, r + 1)
    assert max(p[1] for p in at_r) == r and len(at_r1) > len(at_r)
    binary = "".join(str(b) for b in np.unpackbits(code))
    by_bits = client.post("/api/search?radius=%d&limit=50" % r, json={"code": binary})
    assert _pairs(by_bits) == at_r[:50]
    default = client.post("/api/search", json={"code": to_hex(code)})
    assert default.get_json()["radius"] == service.server.radius
    log = Store(service.db_url).query_log(limit=1)[0]
    assert (log.upload, log.upload_type, log.code) == (None, "code", code.tobytes())


def test_k_caps_results_nearest_first_ties_by_id(client, db) -> None:
    code = db[1][0]
    for k in (1, 4, 50):
        resp = client.post("/api/search", json={"code": to_hex(code), "radius": BITS, "k": k})
        assert resp.status_code == 200
        assert _pairs(resp) == _brute(code, db, BITS, k) and len(_pairs(resp)) == k
    form = client.post("/api/search", data={"code": to_hex(code), "radius": str(BITS), "k": "4"})
    assert _pairs(form) == _brute(code, db, BITS, 4)


def test_images_by_id_and_thumbnails(client, service) -> None:
    resp = client.get(f"/api/images/{1000 + 7 * 3}")
    assert resp.status_code == 200
    assert resp.data == (service.work_dir / "images" / "003.png").read_bytes()
    thumb = client.get(f"/api/images/{1000 + 7 * 3}?size=16")
    assert thumb.status_code == 200 and thumb.mimetype == "image/png"
    assert Image.open(io.BytesIO(thumb.data)).size == (16, 16)
    for url, status in [
        ("/api/images/1001", 404),
        ("/api/images/-5", 404),
        ("/api/images/abc", 404),
        (f"/api/images/{1000}?size=8", 400),
        (f"/api/images/{1000}?size=x", 400),
    ]:
        bad = client.get(url)
        assert bad.status_code == status and "error" in bad.get_json(), url


def test_labels_stats_health(client) -> None:
    assert client.get("/api/anchors?label=square").status_code == 404  # gone: it named the target
    labels = client.get("/api/labels").get_json()["labels"]
    assert [entry["name"] for entry in labels] == list(LABELS)
    store_counts = Store(client.application.extensions["hashveil"]["config"].db_url).label_counts()
    assert {e["name"]: e["count"] for e in labels} == store_counts
    stats = client.get("/api/stats").get_json()
    assert (stats["items"], stats["hash_bits"], stats["index_kind"]) == (N_IMAGES, BITS, "flat")
    assert (stats["backbone"], stats["dataset"], stats["metrics"]) == ("small_cnn", "tiny", {"map": 0.5})


def test_anchor_pool_names_no_label_and_holds_every_label(client, db, service) -> None:
    """/api/anchors/pool: per_label items of every label, each with its code and all its labels,
    the same answer for every client (nothing in it depends on who asks or what for)."""
    body = client.get("/api/anchors/pool?per_label=20").get_json()
    store = Store(service.db_url)
    counts = store.label_counts()
    assert body["per_label"] == 20 and body["radius"] == service.server.radius
    assert body["labels"] == [{"name": n, "count": c} for n, c in counts.items()]
    rows = store.images([item["id"] for item in body["items"]])
    codes = dict(zip(db[0].tolist(), db[1]))
    for item in body["items"]:
        assert item["code"] == to_hex(codes[item["id"]]) and item["labels"] == list(rows[item["id"]].labels)
    for (
        name,
        count,
    ) in counts.items():  # at least per_label items of each label (multi-label items count twice)
        assert sum(name in item["labels"] for item in body["items"]) >= min(20, count)
    assert len({item["id"] for item in body["items"]}) == len(body["items"])
    assert client.get("/api/anchors/pool?per_label=20").get_json() == body
    default = client.get("/api/anchors/pool").get_json()
    assert default["per_label"] == 256 and len(default["items"]) == N_IMAGES  # every item fits in the pool
    for q in ("?per_label=0", "?per_label=1001", "?per_label=x"):
        resp = client.get("/api/anchors/pool" + q)
        assert resp.status_code == 400 and "per_label" in resp.get_json()["error"], q
    assert client.get("/api/health").get_json()["status"] == "ok"


def test_model_card_and_weights_sha256(client, service) -> None:
    card = client.get("/api/model").get_json()
    weights = client.get(card["weights_url"])
    assert weights.status_code == 200
    digest = hashlib.sha256(weights.data).hexdigest()
    assert digest == card["sha256"] == weights.headers["X-SHA256"]
    assert digest == file_sha256(service.work_dir / "model" / "model.safetensors")
    assert (card["hash_bits"], card["backbone"], card["image_size"]) == (BITS, "small_cnn", 32)


def _truncated_png() -> bytes:
    data = random_png(np.random.default_rng(5), 64)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "kwargs, status, needle",
    [
        ({"json": {"radius": 2}}, 400, "image"),
        ({"data": {}}, 400, "image"),
        ({"json": {"code": "zzzz"}}, 400, "hex"),
        ({"json": {"code": "abc"}}, 400, "4 hex digits"),
        ({"json": {"code": 123}}, 400, "string"),
        ({"json": {"code": "abcd", "radius": -1}}, 400, "radius must be an int in [0, 16]"),
        ({"json": {"code": "abcd", "radius": 17}}, 400, "radius must be an int in [0, 16]"),
        ({"json": {"code": "abcd", "radius": "abc"}}, 400, "radius"),
        ({"json": {"code": "abcd", "radius": 2.5}}, 400, "radius"),
        ({"json": {"code": "abcd", "radius": True}}, 400, "radius"),
        ({"json": {"code": "abcd", "k": 0}}, 400, "k must be an int in [1, 50]"),
        ({"json": {"code": "abcd", "k": 51}}, 400, "k must be"),
        ({"json": ["abcd"]}, 400, "JSON object"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "JSON object"),
        ({"data": {"image": (io.BytesIO(b"hello, not an image"), "x.png")}}, 400, "not a readable image"),
        ({"data": {"image": (io.BytesIO(_truncated_png()), "t.png")}}, 400, "truncated"),
        ({"data": {"image": (io.BytesIO(b""), "e.png")}}, 400, "empty"),
        (
            {"data": {"image": (io.BytesIO(b"\x89PNG" + bytes(1_100_000)), "big.png")}},
            413,
            "1 MB upload limit",
        ),
    ],
)
def test_bad_search_input_is_a_json_4xx(client, service, kwargs, status, needle) -> None:
    before = _log_count(service)
    resp = client.post("/api/search", **kwargs)
    assert resp.status_code == status, resp.data[:200]
    assert resp.is_json and needle in resp.get_json()["error"]
    assert _log_count(service) == before  # only answered queries are logged


def test_method_not_allowed_and_unknown_route_are_json(client) -> None:
    resp = client.get("/api/search")
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"] and resp.get_json()["error"]
    assert client.get("/api/nothing").get_json()["error"]


def test_open_searcher_refuses_a_changed_set(tmp_path) -> None:
    cfg = build_tiny_service(tmp_path)
    manifest = read_manifest(tmp_path / "index" / "manifest.json")
    store = Store(manifest.db_url)
    verify(
        manifest,
        model_sha256=manifest.model_sha256,
        index_path=tmp_path / "index" / "index.faiss",
        store=store,
    )
    assert open_searcher(cfg).index.ntotal == N_IMAGES
    with pytest.raises(ValueError, match="model weights changed"):
        verify(manifest, model_sha256="0" * 64, index_path=tmp_path / "index" / "index.faiss", store=store)
    index_file = tmp_path / "index" / "index.faiss"
    good = index_file.read_bytes()
    index_file.write_bytes(good[: len(good) // 2])  # half-written
    with pytest.raises(ValueError, match="index.faiss has sha256"):
        open_searcher(cfg)
    index_file.write_bytes(good)
    rows = store.images(range(1000, 1000 + 7 * N_IMAGES, 7))
    first = rows[1000]
    rows[1000] = ImageRow(
        first.id, first.path, first.labels, first.split, bytes([first.code[0] ^ 1, first.code[1]])
    )
    store.replace_images(rows.values(), LABELS)
    with pytest.raises(ValueError, match="codes differ from the build"):
        open_searcher(cfg)
    store.replace_images(list(rows.values())[1:], LABELS)
    with pytest.raises(ValueError, match="holds 199 images, manifest expects 200"):
        open_searcher(cfg)
    (tmp_path / "index" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="hashveil build-index"):
        open_searcher(cfg)


def test_tampered_weights_are_refused_at_start_naming_the_file(tmp_path) -> None:
    from click.testing import CliRunner

    from hashveil.cli import main

    cfg = build_tiny_service(tmp_path)
    weights = tmp_path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors has sha256 [0-9a-f]{64}, expected .*refusing"):
        open_searcher(cfg)
    (tmp_path / "config.toml").write_text(
        f"[model]\nbackbone = 'small_cnn'\nhash_bits = {BITS}\n"
        f"image_size = 32\n[index]\ndb_url = '{cfg.db_url}'\n"
    )
    result = CliRunner().invoke(
        main, ["--config", str(tmp_path / "config.toml"), "--work-dir", str(tmp_path), "serve", "--port", "0"]
    )
    assert result.exit_code == 1 and f"{weights} has sha256" in result.output


def test_manifest_round_trip_and_bad_files(tmp_path) -> None:
    m = Manifest(
        "a" * 64,
        32,
        "index.faiss",
        "hash",
        "b" * 64,
        3,
        "c" * 64,
        "sqlite://",
        "/data",
        "tiny",
        "2024-01-01T00:00:00+00:00",
    )
    write_manifest(tmp_path / "m.json", m)
    assert read_manifest(tmp_path / "m.json") == m
    assert m.index_path(tmp_path) == tmp_path / "index.faiss"
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="bad.json"):
        read_manifest(tmp_path / "bad.json")
    raw = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "extra.json").write_text(json.dumps({**raw, "index_file": "../../etc/passwd"}))
    with pytest.raises(ValueError, match="plain file name"):
        read_manifest(tmp_path / "extra.json")
    del raw["count"]
    (tmp_path / "missing.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="count"):
        read_manifest(tmp_path / "missing.json")


def test_admin_query_log_needs_the_token(service, monkeypatch) -> None:
    from retrieval.service.server import create_app

    monkeypatch.delenv("HASHVEIL_ADMIN_TOKEN", raising=False)
    closed = create_app(service).test_client()
    assert closed.get("/api/admin/queries").status_code == 403  # no token configured: disabled
    app = create_app(override(service, server={"admin_token": "s3cret"})).test_client()
    png = random_png(np.random.default_rng(7))
    sent = app.post(
        "/api/search", data={"image": (io.BytesIO(png), "q.png")}, content_type="multipart/form-data"
    )
    assert sent.status_code == 200
    assert app.get("/api/admin/queries").status_code == 401
    assert app.get("/api/admin/queries", headers={"Authorization": "Bearer nope"}).status_code == 403
    auth = {"Authorization": "Bearer s3cret"}
    newest = app.get("/api/admin/queries?limit=1", headers=auth).get_json()["queries"][0]
    assert newest["code"] == sent.get_json()["code"] and newest["has_upload"]
    upload = app.get(f"/api/admin/queries/{newest['id']}/upload", headers=auth)
    assert upload.status_code == 200 and upload.data == png  # kept exactly as received
    assert app.get("/api/admin/queries/999999/upload", headers=auth).status_code == 404

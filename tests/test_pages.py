"""Result pages of POST /api/search on the tiny service: the whole result's count and label votes,
pages cut by offset and limit, and the query log keeping the whole result.

References are independent of the server: a brute-force Hamming scan over the store's codes, and
label votes counted from the store's rows with retrieval.core.votes.
"""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.core.codes import hamming, to_hex
from retrieval.core.votes import label_votes
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.service import BITS, FIRST_ID, ID_STEP, N_IMAGES, build_tiny_service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return build_tiny_service(tmp_path_factory.mktemp("pages"))


@pytest.fixture(scope="module")
def client(service):
    return create_app(service).test_client()


@pytest.fixture(scope="module")
def rows(service):
    return Store(service.db_url).images(range(FIRST_ID, FIRST_ID + ID_STEP * N_IMAGES, ID_STEP))


def brute(rows, code: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """(id, distance) within radius, nearest first, ties by id."""
    ids = np.array(sorted(rows), np.int64)
    d = hamming(code[None], np.stack([np.frombuffer(rows[i].code, np.uint8) for i in ids]))[0]
    return sorted(((int(i), int(x)) for i, x in zip(ids, d) if x <= radius), key=lambda p: (p[1], p[0]))


def search(client, **body) -> dict:
    resp = client.post("/api/search", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def pairs(answer: dict) -> list[tuple[int, int]]:
    return [(h["id"], h["distance"]) for h in answer["results"]]


def test_pages_cover_the_whole_result_in_order(client, rows) -> None:
    code = np.frombuffer(rows[FIRST_ID].code, np.uint8)
    want = brute(rows, code, 4)
    assert len(want) > 23  # several pages of 10
    got, seen_counts = [], set()
    for offset in range(0, len(want) + 10, 10):
        page = search(client, code=to_hex(code), radius=4, offset=offset, limit=10)
        assert (page["offset"], page["limit"]) == (offset, 10)
        seen_counts.add((page["count"], page["within_radius"]))
        assert pairs(page) == want[offset : offset + 10]  # the last page is short, past the end empty
        got += pairs(page)
    assert got == want and seen_counts == {(len(want), len(want))}
    again = search(client, code=to_hex(code), radius=4, offset=10, limit=10)
    assert pairs(again) == want[10:20]  # the same page twice: ordering is stable
    odd = search(client, code=to_hex(code), radius=4, offset=3, limit=7)
    assert pairs(odd) == want[3:10]  # pages need not align


def test_label_votes_count_the_whole_result_not_the_page(client, rows) -> None:
    code = np.frombuffer(rows[FIRST_ID + ID_STEP * 9].code, np.uint8)
    want = brute(rows, code, 5)
    page = search(client, code=to_hex(code), radius=5, limit=3)
    assert len(page["results"]) == 3 < page["count"] == len(want)
    assert page["label_votes"] == label_votes(rows[i].labels for i, _ in want)
    assert [tuple(h["labels"]) for h in page["results"]] == [rows[i].labels for i, _ in want[:3]]
    only_count = search(client, code=to_hex(code), radius=5, limit=0)
    assert only_count["results"] == [] and only_count["count"] == len(want)
    assert only_count["label_votes"] == page["label_votes"]


def test_k_sets_the_result_and_within_radius_keeps_the_radius_count(client, rows) -> None:
    code = np.frombuffer(rows[FIRST_ID + ID_STEP * 4].code, np.uint8)
    want = brute(rows, code, BITS)  # everything
    body = search(client, code=to_hex(code), radius=BITS, k=30, offset=25, limit=10)
    assert (body["count"], body["within_radius"], body["k"]) == (30, N_IMAGES, 30)
    assert pairs(body) == want[25:30]  # the k-NN result ends at k, not at the radius
    assert body["label_votes"] == label_votes(rows[i].labels for i, _ in want[:30])


def test_the_log_keeps_the_whole_result_of_a_page(client, service, rows) -> None:
    store = Store(service.db_url)
    code = np.frombuffer(rows[FIRST_ID + ID_STEP * 2].code, np.uint8)
    want = brute(rows, code, 4)
    search(client, code=to_hex(code), radius=4, offset=5, limit=2)
    logged = store.query_log(limit=1)[0]
    assert list(logged.result_ids) == [i for i, _ in want]


def test_default_page_is_page_size_at_most_max_k(service, rows) -> None:
    from retrieval.core.config import override

    code = to_hex(np.frombuffer(rows[FIRST_ID].code, np.uint8))
    small = create_app(override(service, server={"page_size": 4})).test_client()
    body = small.post("/api/search", json={"code": code, "radius": BITS}).get_json()
    assert body["limit"] == 4 and len(body["results"]) == 4 and body["count"] == N_IMAGES
    capped = create_app(override(service, server={"page_size": 500})).test_client()
    assert capped.post("/api/search", json={"code": code, "radius": BITS}).get_json()["limit"] == 50


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"limit": -1}, "limit must be an int in [0, 50]"),
        ({"limit": 51}, "limit must be an int in [0, 50]"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset must be an int in [0, 2147483647]"),
        ({"offset": 2**31}, "offset must be"),
        ({"offset": 1.5}, "offset"),
    ],
)
def test_bad_pages_are_a_json_400(client, params, needle) -> None:
    resp = client.post("/api/search", json={"code": "abcd", **params})
    assert resp.status_code == 400 and needle in resp.get_json()["error"]

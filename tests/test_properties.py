"""Property-based tests (hypothesis) that try to break the code parser, the index and the API.

References are independent of the code under test: bits read with numpy's unpackbits and the
bit-order formula of retrieval.core.codes, Hamming distances by counting unequal unpacked bits, and
for the API only the contract "2xx, or a 4xx JSON body with an error message; never a 5xx".
Example counts are small so that the file runs in seconds; benchmarks/fuzz_upload.py runs the
upload fuzzing for as long as asked.
"""

from __future__ import annotations

import io
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from retrieval.core.codes import SUPPORTED_BITS, pack, parse, to_hex, unpack
from retrieval.core.config import override
from retrieval.core.imaging import decode_image
from retrieval.service.index import KINDS, BinaryIndex
from retrieval.service.server import create_app
from testkit.hostile import upload_bytes
from testkit.service import BITS, build_tiny_service

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKEN = "property-token"


def _bits(packed: np.ndarray) -> np.ndarray:
    """Bit j of each code as retrieval.core.codes documents it: (packed[j // 8] >> (7 - j % 8)) & 1."""
    j = np.arange(packed.shape[-1] * 8)
    return (packed[..., j // 8] >> (7 - j % 8)) & 1


@st.composite
def packed_codes(draw: st.DrawFn, n: int | None = None, hash_bits: int | None = None) -> np.ndarray:
    hash_bits = draw(st.sampled_from(SUPPORTED_BITS)) if hash_bits is None else hash_bits
    n = draw(st.integers(1, 5)) if n is None else n
    return draw(hnp.arrays(np.uint8, (n, hash_bits // 8)))


# codes


@FEW
@given(packed_codes())
def test_hex_and_binary_round_trip(codes) -> None:
    hash_bits = codes.shape[1] * 8
    for code in codes:
        text = to_hex(code)
        assert len(text) == hash_bits // 4 and text == text.lower()
        for variant in (text, text.upper(), f"  0x{text}\n"):
            np.testing.assert_array_equal(parse(variant, hash_bits), code[None])
        binary = "".join(map(str, _bits(code)))
        np.testing.assert_array_equal(parse(binary, hash_bits), code[None])


@FEW
@given(packed_codes())
def test_unpack_gives_signs_of_the_documented_bits_and_pack_inverts_it(codes) -> None:
    signs = unpack(codes).numpy()
    assert signs.dtype == np.float32 and signs.shape == (codes.shape[0], codes.shape[1] * 8)
    np.testing.assert_array_equal(signs, _bits(codes) * 2.0 - 1.0)
    np.testing.assert_array_equal(pack(signs), codes)
    np.testing.assert_array_equal(pack(signs * 0.3), codes)  # only the sign matters


_CODE_ALPHABET = st.sampled_from(list("0123456789abcdefABCDEF01xX \t\ng-_\u0660\u00b2\u0130\u212a\uff10"))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(), st.text(_CODE_ALPHABET, min_size=2, max_size=70)), st.sampled_from(SUPPORTED_BITS)
)
def test_any_string_parses_to_its_code_or_raises_a_value_error(text, hash_bits) -> None:
    try:
        code = parse(text, hash_bits)
    except ValueError as e:
        assert str(e)
        return
    assert code.dtype == np.uint8 and code.shape == (1, hash_bits // 8)
    s = text.strip().lower()
    s = s[2:] if s.startswith("0x") else s
    assert s in (to_hex(code[0]), "".join(map(str, _bits(code[0]))))


@pytest.mark.parametrize("value", [None, 12, 1.5, b"abcd", ["ab", "cd"], {"code": "abcd"}])
def test_non_strings_are_a_type_error(value) -> None:
    with pytest.raises(TypeError, match="code must be a string"):
        parse(value, 16)


# index


def _brute(queries: np.ndarray, db: np.ndarray, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (ids, distances) of every item, sorted by (distance, id)."""
    dist = (_bits(queries)[:, None, :] != _bits(db)[None, :, :]).sum(axis=2)
    out = []
    for d in dist:
        order = np.lexsort((ids, d))
        out.append((ids[order], d[order]))
    return out


@st.composite
def index_cases(draw: st.DrawFn):
    hash_bits = draw(st.sampled_from(SUPPORTED_BITS))
    n = draw(st.integers(0, 40))
    width = hash_bits // 8
    # few distinct byte values: many equal distances, so ties and the radius edge get exercised
    elements = st.one_of(st.sampled_from([0, 1, 3, 128, 255]), st.integers(0, 255))
    db = draw(hnp.arrays(np.uint8, (n, width), elements=elements))
    ids = np.array(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n, unique=True)), np.int64)
    fresh = draw(hnp.arrays(np.uint8, (draw(st.integers(0, 3)), width), elements=elements))
    picked = db[draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=2 if n else 0))]
    queries = np.concatenate([fresh, picked]) if len(fresh) + len(picked) else np.zeros((1, width), np.uint8)
    return draw(st.sampled_from(KINDS)), hash_bits, db, ids, queries


@settings(max_examples=60, deadline=None)
@given(index_cases(), st.data())
def test_index_matches_brute_force_hamming(case, data) -> None:
    kind, hash_bits, db, ids, queries = case
    index = BinaryIndex.create(hash_bits, kind)
    if len(ids):
        index.add(db, ids)
    radius = data.draw(st.integers(0, hash_bits), label="radius")
    k = data.draw(st.integers(1, 50), label="k")
    want = _brute(queries, db, ids)
    for (got_ids, got_d), (ref_ids, ref_d) in zip(index.range_search(queries, radius), want, strict=True):
        keep = ref_d <= radius  # inclusive
        np.testing.assert_array_equal(got_ids, ref_ids[keep])
        np.testing.assert_array_equal(got_d, ref_d[keep])
    for (got_ids, got_d), (ref_ids, ref_d) in zip(index.knn(queries, k), want, strict=True):
        np.testing.assert_array_equal(got_ids, ref_ids[:k])
        np.testing.assert_array_equal(got_d, ref_d[:k])
    for (got_ids, got_d), (ref_ids, ref_d) in zip(index.search(queries, radius, k), want, strict=True):
        keep = ref_d <= radius
        np.testing.assert_array_equal(got_ids, ref_ids[keep][:k])
        np.testing.assert_array_equal(got_d, ref_d[keep][:k])


_not_ints = st.one_of(st.floats(), st.text(max_size=3), st.booleans(), st.just(np.float64(2.0)))


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(KINDS),
    st.one_of(st.integers(-5, -1), st.integers(17, 10**20), _not_ints, st.none()),
    st.one_of(st.integers(-5, 0), st.integers(2**31, 10**20), _not_ints),
)
def test_index_refuses_bad_radius_and_k_with_a_value_error(kind, radius, k) -> None:
    index = BinaryIndex.create(16, kind)
    index.add(np.zeros((1, 2), np.uint8), np.array([7]))
    q = np.zeros((1, 2), np.uint8)
    for call in (
        lambda: index.range_search(q, radius),
        lambda: index.knn(q, k),
        lambda: index.search(q, 2, k),
    ):
        with pytest.raises(ValueError, match="must be an int in"):
            call()


# the API


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    cfg = override(build_tiny_service(tmp_path_factory.mktemp("properties")), server={"admin_token": TOKEN})
    return create_app(cfg).test_client()


def _assert_clean(resp, what) -> None:
    """2xx, or a 4xx JSON body whose error is a non-empty message."""
    assert resp.status_code < 500, (what, resp.status_code, resp.data[:300])
    if resp.status_code >= 400:
        assert resp.is_json, (what, resp.status_code, resp.data[:300])
        body = resp.get_json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), what


NAMES = ["code", "radius", "k", "label", "n", "seed", "size", "limit", "offset", "image"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
param_values = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "0", "16", "17", "-1", " 3 ", "1e3", "0x10", "\u0663", "ffff"]),
)
params = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=6)), param_values, max_size=4)
path_ids = st.one_of(
    st.integers(-10, 2**70).map(str), st.just("1000"), st.text(max_size=12).map(lambda s: quote(s, safe=""))
)
GET_ROUTES = [
    "/api/images/{}",
    "/api/model",
    "/api/anchors/pool",
    "/api/labels",
    "/api/health",
    "/api/stats",
    "/api/openapi.json",
    "/api/admin/queries",
    "/api/admin/queries/{}/upload",
    "/api/{}",
]
tokens = st.sampled_from(
    [{}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer x"}, {"Authorization": TOKEN}]
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(GET_ROUTES), path_ids, params, tokens)
def test_any_get_is_a_2xx_or_a_json_4xx(api, route, path_id, query, headers) -> None:
    url = route.format(path_id)
    _assert_clean(api.get(url, query_string=query, headers=headers), (url, query))


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={n: json_values for n in ("code", "radius", "k")}),
        st.fixed_dictionaries(
            {"code": st.sampled_from(["abcd", "0x00ff", "1" * BITS])},
            optional={"radius": json_values, "k": json_values},
        ),
    ),
    params,
)
def test_any_json_search_is_a_2xx_or_a_json_4xx(api, body, query) -> None:
    _assert_clean(api.post("/api/search", json=body, query_string=query), (body, query))


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(st.sampled_from(NAMES), param_values, max_size=4),
    params,
    st.sampled_from(["multipart/form-data", "application/x-www-form-urlencoded", "text/plain", None]),
)
def test_any_form_search_is_a_2xx_or_a_json_4xx(api, form, query, content_type) -> None:
    kwargs = {"data": form} if content_type is None else {"data": form, "content_type": content_type}
    if content_type == "text/plain":
        kwargs["data"] = repr(form)
    _assert_clean(api.post("/api/search", query_string=query, **kwargs), (form, query, content_type))


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["/api/search", "/api/health", "/api/images/1000", "/api/admin/queries", "/api/nowhere"]),
    st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
)
def test_other_methods_are_json_4xx(api, url, method) -> None:
    resp = api.open(url, method=method)
    assert resp.status_code < 500
    if resp.status_code >= 400 and method != "HEAD":
        _assert_clean(resp, (method, url))


# uploads: the CI profile of benchmarks/fuzz_upload.py


@settings(max_examples=150, deadline=None)
@given(upload_bytes())
def test_decode_returns_rgb_or_raises_a_value_error(upload) -> None:
    _, data = upload
    try:
        img = decode_image(data)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(img, Image.Image) and img.mode == "RGB" and min(img.size) >= 1


@settings(max_examples=40, deadline=None)
@given(upload_bytes(), st.sampled_from(["q.png", "q.jpg", "", "../../etc/passwd"]))
def test_any_upload_is_a_2xx_or_a_json_4xx(api, upload, filename) -> None:
    source, data = upload
    resp = api.post(
        "/api/search", data={"image": (io.BytesIO(data), filename)}, content_type="multipart/form-data"
    )
    _assert_clean(resp, source)

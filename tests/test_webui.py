"""The web pages in headless Chromium, against real servers on localhost (waitress threads).

The service (JSON API + pages) and the privacy client run as they would for users; references
are independent of the pages: a brute-force Hamming scan over the store's codes, the bytes the
service actually received (recorded by a WSGI middleware) and its query log.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from retrieval.core.codes import hamming
from retrieval.core.config import override
from retrieval.core.imaging import decode_image, load_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.core.votes import majority_label
from retrieval.service.search import open_searcher
from retrieval.service.server import create_app
from retrieval.service.store import Store
from testkit.servers import live_server
from webui.client import create_client_app
from webui.service import mount_service_pages

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        "browser tests need /usr/bin/chromium (Debian packages chromium, chromium-driver)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need playwright (pip install playwright)"
)

pytestmark = pytest.mark.slow

TOKEN = "s3cret-admin-token"
SHOTS = Path(__file__).resolve().parents[1] / "results" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 20_000


class Recorder:
    """WSGI middleware: keeps the path and body of every request the service receives."""

    def __init__(self, app) -> None:
        self.app, self.requests = app, []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.requests.append((environ["PATH_INFO"], body))
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def sites(tiny_trained, tmp_path_factory) -> Iterator[dict]:
    """The service with its pages, and a privacy client pointed at it (own work dir, as on another machine)."""
    cfg, _ = tiny_trained
    cfg = override(cfg, server={"admin_token": TOKEN}, privacy={"eps": 16 / 255, "steps": 200})
    app = create_app(cfg)
    mount_service_pages(app)
    recorder = Recorder(app)
    client_cfg = override(cfg, paths={"work_dir": tmp_path_factory.mktemp("client")})
    with (
        live_server(recorder) as service_url,
        live_server(create_client_app(service_url, client_cfg)) as client_url,
    ):
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield {
            "cfg": cfg,
            "service": service_url,
            "client": client_url,
            "recorder": recorder,
            "store": app.extensions["hashveil"]["searcher"].store,
        }


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    """A persistent headless Chromium context on a fresh profile (never `playwright install`)."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _file(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _images_loaded(page, selector: str) -> list[int]:
    """naturalWidth of each matching <img> once loaded (0 = broken)."""
    page.wait_for_function(f"[...document.querySelectorAll({selector!r})].every(i => i.complete)")
    return page.eval_on_selector_all(selector, "els => els.map(e => e.naturalWidth)")


def _no_horizontal_overflow(page) -> None:
    width = page.evaluate("window.innerWidth")
    scroll = page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    assert scroll <= width, f"page is {scroll}px wide at a {width}px viewport"


def _database(store: Store) -> dict[int, tuple[bytes, tuple[str, ...]]]:
    """Every database item's code and labels, read from the store label by label."""
    rows = {}
    for label in store.label_names():
        ids, _ = store.codes_with_label(label, 10**6, 0)
        rows.update({i: (r.code, r.labels) for i, r in store.images(ids.tolist()).items()})
    return rows


def test_search_by_upload_shows_results(sites, browser, tiny_data):
    cfg, store = sites["cfg"], sites["store"]
    path = tiny_data / "img" / "0005.png"
    model, _ = load_checkpoint(cfg.work_dir / "model")
    code = model.encode(to_tensor(load_image(path))[None])
    db = _database(store)
    expected = sorted(
        (int(hamming(code, np.frombuffer(c, np.uint8)[None])[0, 0]), i) for i, (c, _) in db.items()
    )
    expected = [(d, i) for d, i in expected if d <= cfg.server.radius]
    assert expected, "the reference scan finds nothing: the test image is not representative"

    page = browser.new_page()
    page.goto(sites["service"] + "/")
    assert page.locator("meta[name=viewport]").count() == 1
    page.set_input_files("#image", str(path))
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#results:not([hidden]) #hits li")
    shown = page.eval_on_selector_all(
        "#hits li",
        "els => els.map(e => [Number(e.dataset.distance), Number(e.dataset.id), e.dataset.labels])",
    )
    assert [(d, i) for d, i, _ in shown] == expected
    assert all(labels.split("|") == list(db[i][1]) for _, i, labels in shown)
    assert page.inner_text("#query-code") == code[0].tobytes().hex()
    assert page.inner_text("#result-count") == str(len(expected))
    assert all(w > 0 for w in _images_loaded(page, "#hits img"))
    assert all(page.eval_on_selector_all("#hits img", "els => els.map(e => e.alt.startsWith('Result '))"))
    page.screenshot(path=str(SHOTS / "search.png"), full_page=True)
    page.close()


def test_invalid_upload_shows_a_readable_error(sites, browser):
    page = browser.new_page()
    page.goto(sites["service"] + "/")
    page.set_input_files("#image", _file("holiday.png", b"this is a text file, not a picture"))
    page.get_by_role("button", name="Search").click()
    error = page.wait_for_selector("#error:not([hidden])")
    assert "not a readable image" in error.inner_text()
    assert page.locator("#results").is_hidden()
    page.screenshot(path=str(SHOTS / "search-error.png"), full_page=True)
    page.close()


def _boundary_image(data_dir: Path) -> bytes:
    """An even blend of a green and a yellow database image: it sits between two labels."""
    a = np.asarray(load_image(data_dir / "img" / "0001.png"), dtype=np.float64)  # green
    b = np.asarray(load_image(data_dir / "img" / "0003.png"), dtype=np.float64)  # yellow
    return _png(np.rint((a + b) / 2).astype(np.uint8))


@pytest.fixture(scope="module")
def protected(sites, browser, tiny_data) -> dict:
    """Drive the client once: protect a boundary image toward the other label, then send it."""
    cfg = sites["cfg"]
    original = _boundary_image(tiny_data)
    searcher = open_searcher(cfg)  # what the original would reveal, computed without the client
    _, hits = searcher.search_images(to_tensor(decode_image(original))[None], cfg.server.radius)
    original_label, _ = majority_label(h.labels for h in hits[0])
    assert original_label in ("green", "yellow"), original_label
    target = "yellow" if original_label == "green" else "green"

    log_before = max((r.id for r in sites["store"].query_log(1)), default=0)
    recorded_before = len(sites["recorder"].requests)
    page = browser.new_page()
    page.goto(sites["client"] + "/")
    page.set_input_files("#image", _file("my-photo.png", original))
    page.check("input[name=mode][value=semantic]")
    page.select_option("#target_label", target)
    page.get_by_role("button", name="Protect on this machine").click()
    page.wait_for_selector("#outcome:not([hidden])")
    job_url = page.evaluate("document.getElementById('img-protected').src").rsplit("/", 1)[0]
    status = requests.get(job_url, timeout=10).json()
    page.get_by_role("button", name="Send the protected image to the server").click()
    page.wait_for_selector("#results:not([hidden])")
    return {
        "page": page,
        "original": original,
        "original_label": original_label,
        "target": target,
        "status": status,
        "protected_png": requests.get(job_url + "/protected.png", timeout=10).content,
        "log": [r for r in sites["store"].query_log(10_000) if r.id > log_before],
        "received": sites["recorder"].requests[recorded_before:],
    }


def test_protected_query_end_to_end(sites, protected):
    page, status, result = protected["page"], protected["status"], protected["status"]["result"]
    assert status["state"] == "done"
    assert result["target_label"] == protected["target"] and result["distance"] == 0 and result["reached"]
    assert page.inner_text("#m-distance") == "0 (reached)"
    assert page.inner_text("#m-psnr") == f"{result['psnr_db']:.2f}"
    assert all(w > 0 for w in _images_loaded(page, ".compare figure:not([hidden]) img"))
    assert page.get_attribute("#curve-svg polyline", "data-points") == str(result["iterations"] + 1)
    assert page.inner_text("#original-label") == result["original_likely_label"]

    # before sending: the server's model's reading of both images, as sent and re-encoded, and the
    # rows the benchmark measured for this mode (or a note that none ships)
    views = page.eval_on_selector_all(
        "#server-views tbody tr",
        "els => els.map(e => [e.dataset.view, e.cells[1].innerText, e.cells[2].innerText])",
    )
    assert [v[0] for v in views] == ["sent", "jpeg90", "jpeg75", "resize0.5"]
    assert views[0][1:] == [result["original_likely_label"], result["protected_likely_label"]]
    assert views == [
        [v["view"], v["original"] or "none", v["protected"] or "none"] for v in result["server_views"]
    ]
    if page.query_selector("#ladder"):
        shown = page.eval_on_selector_all(
            "#ladder tbody tr:not([hidden])", "els => els.map(e => e.dataset.mode)"
        )
        assert shown and set(shown) == {"semantic"}
    else:
        assert "no copy of an attacker's own model" in page.inner_text("#ladder-missing")

    # the protected image is within the budget of the original (independent check on the PNGs)
    x = np.asarray(decode_image(protected["original"]), dtype=np.int16)
    y = np.asarray(decode_image(protected["protected_png"]), dtype=np.int16)
    assert 0 < np.abs(x - y).max() <= 16

    # the server received the protected PNG once, and never the original
    searches = [body for path, body in protected["received"] if path == "/api/search"]
    assert len(searches) == 1 and protected["protected_png"] in searches[0]
    assert not any(protected["original"] in body for _, body in protected["received"])
    (logged,) = protected["log"]
    assert logged.upload == protected["protected_png"]

    # the page shows what the server returned for it
    shown = page.eval_on_selector_all("#hits li", "els => els.map(e => Number(e.dataset.id))")
    assert shown == list(logged.result_ids) and shown
    assert page.inner_text("#result-label") == protected["target"]
    assert all(w > 0 for w in _images_loaded(page, "#hits img"))
    page.screenshot(path=str(SHOTS / "client.png"), full_page=True)


def test_attacker_view_lists_the_protected_query(sites, browser, protected):
    (logged,) = protected["log"]
    base = sites["service"]
    assert requests.get(f"{base}/admin", timeout=10).status_code == 401
    assert requests.get(f"{base}/admin/queries/{logged.id}/upload.png", timeout=10).status_code == 401
    wrong = requests.post(f"{base}/admin/login", data={"token": "guess"}, timeout=10)
    assert wrong.status_code == 403 and "Wrong admin token" in wrong.text
    thumb = requests.get(
        f"{base}/admin/queries/{logged.id}/upload.png?size=32",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (32, 32)

    page = browser.new_page()
    page.goto(base + "/admin")
    page.fill("#token", TOKEN)
    page.get_by_role("button", name="Log in").click()
    card = page.wait_for_selector(f"#query-{logged.id}")
    inferred = card.get_attribute("data-inferred")
    assert inferred != protected["original_label"] and inferred == protected["target"]
    assert int(card.get_attribute("data-results")) == len(logged.result_ids)
    assert all(w > 0 for w in _images_loaded(page, f"#query-{logged.id} .upload img"))

    # the summary counts every logged query once, and the confident ones as recomputed here
    rows = sites["store"].query_log(500)
    items = sites["store"].images({i for r in rows for i in r.result_ids})
    confident = 0
    for r in rows:
        label, votes = majority_label(items[i].labels for i in r.result_ids)
        confident += (
            len(r.result_ids) >= 3 and label is not None and votes[label] >= 2 / 3 * len(r.result_ids)
        )
    counts = page.eval_on_selector_all(
        "#leakage-summary tbody tr",
        "els => els.map(e => [Number(e.dataset.queries), Number(e.dataset.confident)])",
    )
    assert sum(q for q, _ in counts) == len(rows) and sum(c for _, c in counts) == confident
    page.screenshot(path=str(SHOTS / "admin.png"), full_page=True)
    page.close()


def _finished(url: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = requests.get(url, timeout=10).json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {url} did not finish in 30 s")


def test_client_modes_and_bad_input_over_http(sites, tiny_data):
    """Carrier and untargeted jobs target the right codes and send the server nothing."""
    client, recorder = sites["client"], sites["recorder"]
    carrier = (tiny_data / "img" / "0002.png").read_bytes()
    private = (tiny_data / "img" / "0005.png").read_bytes()
    r = requests.post(
        f"{client}/protect", data={"mode": "carrier"}, files={"image": ("c.png", carrier)}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"] == "choose the private image"
    r = requests.post(f"{client}/protect", files={"image": ("x.png", b"no image")}, timeout=10)
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    r = requests.post(
        f"{client}/protect",
        files={"image": ("c.png", carrier)},
        timeout=10,
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403

    model, _ = load_checkpoint(sites["cfg"].work_dir / "model")
    before = len(recorder.requests)
    r = requests.post(
        f"{client}/protect",
        data={"mode": "carrier", "strength": "low"},
        timeout=10,
        files={"image": ("c.png", carrier), "private": ("p.png", private)},
    )
    assert r.status_code == 202
    status = _finished(client + r.json()["status_url"])
    result = status["result"]
    assert status["state"] == "done" and result["target_label"] is None
    assert set(status["images"]) == {"original", "protected", "perturbation", "private"}
    assert result["eps_255"] == 4 and 0 < result["linf_255"] <= 4
    assert result["target_code"] == model.encode(to_tensor(decode_image(private))[None])[0].tobytes().hex()

    r = requests.post(
        f"{client}/protect", data={"mode": "untargeted"}, files={"image": ("c.png", carrier)}, timeout=10
    )
    result = _finished(client + r.json()["status_url"])["result"]
    own = bytes.fromhex(result["original_code"])
    assert bytes.fromhex(result["target_code"]) == bytes(b ^ 0xFF for b in own)
    assert len(result["trace"]) == result["iterations"] + 1 and result["trace"][-1] == result["distance"]
    live = _finished(client + r.json()["status_url"])["trace"]  # what the page drew while it ran
    assert len(live) >= len(result["trace"]) - 1 and live == result["trace"][: len(live)]

    received = recorder.requests[before:]
    assert all(path != "/api/search" for path, _ in received)
    assert not any(private in body or carrier in body for _, body in received)


def test_pages_fit_a_phone(sites, browser, protected):
    protected["page"].set_viewport_size({"width": 375, "height": 812})
    _no_horizontal_overflow(protected["page"])
    protected["page"].screenshot(path=str(SHOTS / "client-phone.png"), full_page=True)
    page = browser.new_page()
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(sites["service"] + "/")
    page.set_input_files("#image", _file("query.png", protected["original"]))
    page.fill("#k", "12")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#results:not([hidden])")
    assert page.locator("#hits li").count() == 12
    assert all(w > 0 for w in _images_loaded(page, "#hits img"))
    _no_horizontal_overflow(page)
    page.screenshot(path=str(SHOTS / "search-phone.png"), full_page=True)
    page.goto(sites["service"] + "/admin")
    if page.locator("#token").count():
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Log in").click()
    page.wait_for_selector(".query")
    _no_horizontal_overflow(page)
    page.screenshot(path=str(SHOTS / "admin-phone.png"), full_page=True)
    page.close()

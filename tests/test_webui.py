"""The web pages in headless Chromium, against real servers on localhost (waitress threads).

The service (JSON API + pages) and the privacy client run as they would for users; references
are independent of the pages: a brute-force Hamming scan over the store's codes, the bytes the
service actually received (recorded by a WSGI middleware) and its query log.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from retrieval.core.codes import hamming
from retrieval.core.imaging import decode_image, load_image, to_tensor
from retrieval.core.model import load_checkpoint
from retrieval.core.votes import label_votes, majority_label, majority_of
from retrieval.service.search import open_searcher
from retrieval.service.store import Store

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


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    """A persistent headless Chromium context on a fresh profile (never `playwright install`).

    Its console's Content-Security-Policy reports are kept in ``context.csp_reports``.
    """
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.csp_reports = []
        context.on(
            "console",
            lambda m: "Content Security Policy" in m.text and context.csp_reports.append(m.text),
        )
        yield context
        context.close()


@pytest.fixture(autouse=True)
def no_csp_violations(request) -> Iterator[None]:
    """Every browser test ends with no Content-Security-Policy report in the console."""
    yield
    if "browser" in request.fixturenames:
        reports = request.getfixturevalue("browser").csp_reports
        found, reports[:] = list(reports), []
        assert found == [], "CSP violations in the browser console"


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _file(name: str, data: bytes, mime: str = "image/png") -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def _images_loaded(page, selector: str) -> list[int]:
    """naturalWidth of each matching <img> once loaded (0 = broken)."""
    # a function, not an expression string: Playwright evals strings, which the pages' CSP forbids
    page.wait_for_function("s => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector)
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


def test_search_pages_through_a_result_larger_than_a_page(sites, browser, tiny_data):
    """Radius = every bit: the whole database, more than a page; later pages go by the query's code."""
    cfg, store, recorder = sites["cfg"], sites["store"], sites["recorder"]
    path = tiny_data / "img" / "0005.png"
    model, _ = load_checkpoint(cfg.work_dir / "model")
    code = model.encode(to_tensor(load_image(path))[None])
    db = _database(store)
    expected = sorted(
        (int(hamming(code, np.frombuffer(c, np.uint8)[None])[0, 0]), i) for i, (c, _) in db.items()
    )
    size = min(cfg.server.page_size, cfg.server.max_k)
    assert len(expected) > size

    def shown() -> list[tuple[int, int]]:
        cells = page.eval_on_selector_all(
            "#hits li", "els => els.map(e => [e.dataset.distance, e.dataset.id])"
        )
        return [(int(d), int(i)) for d, i in cells]

    page = browser.new_page()
    page.goto(sites["service"] + "/")
    page.set_input_files("#image", str(path))
    page.fill("#radius", str(cfg.model.hash_bits))
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#results:not([hidden]) #hits li")
    assert shown() == expected[:size] and page.is_hidden("#prev-page")
    assert page.inner_text("#page-range") == f"Results 1 to {size} of {len(expected)}"
    votes = label_votes(db[i][1] for _, i in expected)  # of the whole result, not of the page
    assert page.inner_text("#result-label") == majority_of(votes)
    sent = len(recorder.requests)
    page.get_by_role("button", name="Next page").click()
    page.wait_for_function(  # a function with an argument, not a string: the CSP forbids eval
        "s => document.getElementById('page-range').textContent.startsWith(s)", arg=f"Results {size + 1} "
    )
    assert shown() == expected[size : 2 * size]
    searches = [r.body for r in recorder.since(sent) if r.path == "/api/search"]
    want = {"code": code[0].tobytes().hex(), "radius": cfg.model.hash_bits, "offset": size}
    assert [json.loads(b) for b in searches] == [want]  # a code query: the image is not sent again
    page.get_by_role("button", name="Previous page").click()
    page.wait_for_function(
        "s => document.getElementById('page-range').textContent.startsWith(s)", arg="Results 1 "
    )
    assert shown() == expected[:size]
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
    page.goto(sites["launch"])  # the URL `hashveil client` printed: the token becomes a cookie
    assert page.url == sites["client"] + "/"  # and leaves the address bar
    page.set_input_files("#image", _file("my-photo.png", original))
    page.check("input[name=mode][value=semantic]")
    page.select_option("#target_label", target)
    page.get_by_role("button", name="Protect on this machine").click()
    page.wait_for_selector("#outcome:not([hidden])")
    job_url = page.evaluate("document.getElementById('img-protected').src").rsplit("/", 1)[0]
    status = sites["client_http"].get(job_url, timeout=10).json()
    page.get_by_role("button", name="Send the protected image to the server").click()
    page.wait_for_selector("#results:not([hidden])")
    return {
        "page": page,
        "original": original,
        "original_label": original_label,
        "target": target,
        "status": status,
        "protected_png": sites["client_http"].get(job_url + "/protected.png", timeout=10).content,
        "log": [r for r in sites["store"].query_log(10_000) if r.id > log_before],
        "received": sites["recorder"].since(recorded_before),
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
    assert (
        page.inner_text("#m-file").startswith("PNG, ") and page.inner_text("#m-file-check") == "at the target"
    )

    # before sending: the server's model's reading of both images, as sent and re-encoded, and the
    # rows the benchmark measured for this mode (or a note that none ships)
    views = page.eval_on_selector_all(
        "#server-views tbody tr",
        "els => els.map(e => [e.dataset.view, e.cells[1].innerText, e.cells[2].innerText])",
    )
    assert [v[0] for v in views] == ["sent", "jpeg90", "jpeg60", "webp80", "resize0.5"]
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
    searches = [r.body for r in protected["received"] if r.path == "/api/search"]
    assert len(searches) == 1 and protected["protected_png"] in searches[0]
    assert not any(protected["original"] in r.body for r in protected["received"])
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
        headers={"Authorization": f"Bearer {sites['token']}"},
        timeout=10,
    )
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (32, 32)

    page = browser.new_page()
    page.goto(base + "/admin")
    page.fill("#token", sites["token"])
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
        page.fill("#token", sites["token"])
        page.get_by_role("button", name="Log in").click()
    page.wait_for_selector(".query")
    _no_horizontal_overflow(page)
    page.screenshot(path=str(SHOTS / "admin-phone.png"), full_page=True)
    page.close()


SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


def test_client_answers_only_its_launch_token_and_its_loopback_name(sites, browser):
    """Another user (or program) on this machine has no token; a rebound name is refused."""
    client, launch = sites["client"], sites["launch"]
    fresh = browser.new_page()  # same browser profile: drop the cookie the launch URL set
    browser.clear_cookies()
    response = fresh.goto(client + "/")
    assert response.status == 403
    assert "Open the link that hashveil client printed" in fresh.inner_text("h1")
    assert "http://127.0.0.1:5001/?token=" in fresh.inner_text("main")
    fresh.screenshot(path=str(SHOTS / "client-token-required.png"), full_page=True)
    wrong = fresh.goto(client + "/?token=guess")
    assert wrong.status == 403 and "not this launch's" in fresh.inner_text("main")
    ok = fresh.goto(launch)
    assert ok.status == 200 and fresh.url == client + "/" and fresh.locator("#protect-form").count() == 1
    assert all(ok.headers.get(h.lower()) for h in SECURITY_HEADERS)
    fresh.close()

    for path in ("/", "/jobs/x", "/thumbs/1", "/ui/static/client.js"):
        r = requests.get(client + path, timeout=10)
        assert r.status_code == 403 and "hashveil client" in r.json()["error"], path
    r = requests.post(client + "/protect", files={"image": ("x.png", b"x")}, timeout=10)
    assert r.status_code == 403
    port = client.rsplit(":", 1)[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{int(port) + 1}"):
        page = sites["client_http"].get(client + "/", headers={"Host": host}, timeout=10)
        assert page.status_code == 400 and "does not answer to the host name" in page.text, host
        r = sites["client_http"].get(client + "/jobs/x", headers={"Host": host}, timeout=10)
        assert r.status_code == 400 and "printed" in r.json()["error"], host


def test_service_refuses_other_host_names(sites):
    base = sites["service"]
    for path in ("/", "/api/health", "/admin/login", "/ui/static/style.css"):
        ok = requests.get(base + path, timeout=10)
        assert ok.status_code == 200 and all(ok.headers.get(h) for h in SECURITY_HEADERS), path
        assert ok.headers["X-Frame-Options"] == "DENY" and ok.headers["X-Content-Type-Options"] == "nosniff"
        evil = requests.get(base + path, headers={"Host": "evil.example"}, timeout=10)
        assert evil.status_code == 400, path
    api = requests.get(base + "/api/health", headers={"Host": "evil.example"}, timeout=10)
    assert "server.allowed_hosts" in api.json()["error"]


def test_other_sites_cannot_frame_the_pages_and_inline_code_is_blocked(sites, browser):
    """frame-ancestors 'none' in a real browser, and the CSP check above is able to see violations."""
    page = browser.new_page()
    page.set_content(
        f'<iframe id="c" src="{sites["client"]}/"></iframe><iframe id="s" src="{sites["service"]}/"></iframe>'
    )
    page.wait_for_timeout(1000)
    framed = [f for f in page.frames if f != page.main_frame]
    assert len(framed) == 2
    for frame in framed:  # the frames hold Chromium's error page, never the app's form
        assert frame.locator("form").count() == 0
    blocked = [m for m in browser.csp_reports if "frame-ancestors" in m]
    assert len(blocked) == 2, browser.csp_reports
    browser.csp_reports.clear()

    page.goto(sites["service"] + "/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        " document.body.append(s); }"
    )
    assert page.evaluate("window.ran") is None  # the inline script did not run
    assert any("script-src" in m or "default-src" in m for m in browser.csp_reports)
    browser.csp_reports.clear()
    page.close()

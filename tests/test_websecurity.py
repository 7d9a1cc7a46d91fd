"""Both web apps' guards through Flask's test client and a real waitress: the Host allowlist (DNS
rebinding), the client's per-launch token, the security headers on every route, the cookies' flags,
and the service behind a TLS-terminating proxy (waitress trusting its X-Forwarded-* headers)."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest
import requests
from flask import Flask

from hashveil.service_commands import waitress_options
from retrieval.core.config import override
from retrieval.service.server import create_app
from retrieval.websecurity import LOOPBACK_NAMES, HostRule, server_host_rule, split_host
from testkit.servers import live_server
from testkit.service import build_tiny_service
from webui.client import create_client_app
from webui.launch import launch_url
from webui.service import mount_service_pages

TOKEN = "admin-s3cret"
PORT = 5001
BASE = f"http://127.0.0.1:{PORT}"
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return override(build_tiny_service(tmp_path_factory.mktemp("sec")), server={"admin_token": TOKEN})


@pytest.fixture(scope="module")
def service(cfg) -> Flask:
    app = create_app(cfg)
    mount_service_pages(app)
    return app


@pytest.fixture()
def client_app(cfg) -> Flask:
    """The privacy client app; its server is unreachable (port 9): the guards answer first."""
    return create_client_app("http://127.0.0.1:9", cfg)


def _check_headers(resp, where: str) -> None:
    for name, value in HEADERS.items():
        assert resp.headers.get(name) == value, f"{where}: {name}"
    csp = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["frame-ancestors"] == "'none'", where
    assert csp["img-src"] == "'self' blob:" and csp["object-src"] == "'none'", where
    assert "unsafe" not in resp.headers["Content-Security-Policy"], where


def _urls(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) for every route of ``app``, with placeholder arguments."""
    out = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<int[^>]*:[^>]+>", "1", rule.rule)
        url = re.sub(r"<path:[^>]+>", "style.css", url)
        url = re.sub(r"<[^>]+>", "x", url)
        out += [(m, url) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


# the Host rule


@pytest.mark.parametrize(
    "host, parsed",
    [
        ("127.0.0.1:5001", ("127.0.0.1", 5001)),
        ("LocalHost.", ("localhost", None)),
        ("[::1]:80", ("[::1]", 80)),
        ("search.example.org", ("search.example.org", None)),
        ("evil.example@127.0.0.1", None),
        ("127.0.0.1:5001:1", None),
        ("", None),
        ("a b", None),
    ],
)
def test_split_host(host, parsed) -> None:
    assert split_host(host) == parsed


def test_host_rules() -> None:
    client = HostRule(LOOPBACK_NAMES, own_port=True)
    assert all(client.allows(f"{n}:5001", 5001, 80) for n in ("127.0.0.1", "localhost", "[::1]", "LOCALHOST"))
    for bad in (
        "evil.example:5001",
        "127.0.0.1:5002",
        "127.0.0.1",
        "localhost.evil.example:5001",
        "1.2.3.4:5001",
    ):
        assert not client.allows(bad, 5001, 80), bad
    assert client.allows("127.0.0.1", 80, 80)  # no port in Host: the scheme's

    local = server_host_rule("127.0.0.1", ())
    assert local.allows("localhost:5000", 5000, 80) and local.allows("127.0.0.1:8080", 5000, 80)
    assert not local.allows("evil.example:5000", 5000, 80) and not local.allows("10.0.0.5:5000", 5000, 80)
    public = server_host_rule("0.0.0.0", ())
    assert public.allows("10.0.0.5:5000", 5000, 80) and public.allows("[2001:db8::1]", 5000, 80)
    assert not public.allows("evil.example", 5000, 80)
    named = server_host_rule("0.0.0.0", ("search.example.org", "api.example.org:8443"))
    assert named.allows("search.example.org", 5000, 443) and named.allows("Search.Example.org:444", 5000, 443)
    assert named.allows("api.example.org:8443", 5000, 443) and not named.allows("api.example.org", 5000, 443)
    assert named.allows("localhost:5000", 5000, 80)  # health checks on the machine itself
    assert not named.allows("10.0.0.5", 5000, 80)  # names configured: addresses are no longer implied
    assert server_host_rule("127.0.0.1", ("*",)).allows("anything.example", 5000, 80)


def test_allowed_hosts_config_is_checked() -> None:
    from retrieval.core.config import Config

    cfg = override(Config(), server={"allowed_hosts": ["search.example.org", "[::1]:8080"]})
    assert cfg.server.allowed_hosts == ("search.example.org", "[::1]:8080")
    with pytest.raises(TypeError, match="server.allowed_hosts must be a list of strings"):
        override(Config(), server={"allowed_hosts": "search.example.org"})
    with pytest.raises(ValueError, match="server.allowed_hosts entries must be host names"):
        override(Config(), server={"allowed_hosts": ["http://search.example.org/"]})


# the service


def test_service_refuses_other_hosts_on_every_route_and_heads_every_answer(service) -> None:
    http = service.test_client()
    for method, url in _urls(service):
        evil = http.open(url, method=method, headers={"Host": "evil.example"})
        assert evil.status_code == 400, (method, url)
        _check_headers(evil, f"{method} {url} from evil.example")
        if url.startswith("/api/"):
            assert "server.allowed_hosts" in evil.get_json()["error"]
        ok = http.open(url, method=method, base_url="http://127.0.0.1:5000")
        assert b"does not answer to the host name" not in ok.get_data(), (method, url)
        _check_headers(ok, f"{method} {url}")


def test_service_answers_configured_names(cfg) -> None:
    app = create_app(override(cfg, server={"host": "0.0.0.0", "allowed_hosts": ["search.example.org"]}))
    http = app.test_client()
    assert http.get("/api/health", base_url="https://search.example.org").status_code == 200
    assert http.get("/api/health", base_url="http://localhost:5000").status_code == 200
    assert http.get("/api/health", base_url="http://search.example.org.evil.example").status_code == 400
    assert http.get("/api/health", base_url="http://10.1.2.3:5000").status_code == 400


def _cookie(resp, name: str) -> dict:
    (header,) = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    jar = SimpleCookie()
    jar.load(header)
    flags = {k.lower(): v for k, v in jar[name].items() if v}
    flags["raw"] = header
    return flags


def test_admin_session_cookie_is_httponly_strict_and_secure_over_https(service) -> None:
    plain = service.test_client().post("/admin/login", data={"token": TOKEN})
    c = _cookie(plain, "session")
    assert plain.status_code == 303 and c["samesite"] == "Strict" and c["httponly"] and "secure" not in c
    tls = service.test_client().post("/admin/login", data={"token": TOKEN}, base_url="https://localhost")
    assert _cookie(tls, "session")["secure"]


def test_behind_a_tls_proxy_waitress_trusts_its_forwarded_headers(cfg) -> None:
    """What README's nginx snippet sends, to the options `hashveil serve` gives waitress."""
    proxied = override(cfg, server={"allowed_hosts": ["search.example.org"], "trusted_proxy": "127.0.0.1"})
    app = create_app(proxied)
    mount_service_pages(app)
    opts = {k: v for k, v in waitress_options(proxied).items() if k.startswith(("trusted", "clear"))}
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "search.example.org"}
    with live_server(app, **opts) as url:
        r = requests.post(
            url + "/admin/login", data={"token": TOKEN}, headers=forwarded, allow_redirects=False, timeout=10
        )
        assert r.status_code == 303 and r.headers["Location"] == "/admin"
        assert "Secure" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
        evil = requests.get(url + "/", headers={**forwarded, "X-Forwarded-Host": "evil.example"}, timeout=10)
        assert evil.status_code == 400
    with live_server(app) as url:  # a server that trusts no proxy ignores the headers
        r = requests.post(
            url + "/admin/login", data={"token": TOKEN}, headers=forwarded, allow_redirects=False, timeout=10
        )
        assert r.status_code == 303 and "Secure" not in r.headers["Set-Cookie"]


# the privacy client


def _launch(app: Flask, http) -> None:
    """Open the URL `hashveil client` prints, as the user's browser does."""
    url = launch_url(app, PORT)
    assert url.startswith(f"{BASE}/?token=")
    r = http.get(url.removeprefix(BASE), base_url=BASE)
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_client_refuses_every_route_without_its_token(client_app) -> None:
    http = client_app.test_client()
    routes = _urls(client_app)
    assert {u for _, u in routes} >= {"/", "/protect", "/jobs/x", "/jobs/x/send", "/thumbs/1"}
    for method, url in routes:
        r = http.open(url, method=method, base_url=BASE)
        assert r.status_code == 403, (method, url)
        assert "hashveil client" in r.get_json()["error"] and "token" in r.get_json()["error"]
        _check_headers(r, f"{method} {url}")
    page = http.get("/", base_url=BASE, headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 403 and "printed" in page.get_data(as_text=True)
    _check_headers(page, "the 403 page")

    _launch(client_app, http)
    for method, url in routes:
        r = http.open(url, method=method, base_url=BASE)
        assert r.status_code != 403, (method, url, r.get_data()[:200])
        _check_headers(r, f"{method} {url} with the token")


def test_client_token_exchange(cfg, client_app) -> None:
    http = client_app.test_client()
    url = launch_url(client_app, PORT).removeprefix(BASE)
    r = http.get(url + "&size=32", base_url=BASE)  # other query args survive the redirect
    assert r.status_code == 303 and r.headers["Location"] == "/?size=32"
    c = _cookie(r, f"hashveil-client-{PORT}")
    assert c["httponly"] and c["samesite"] == "Strict" and "secure" not in c
    assert r.headers["Cache-Control"] == "no-store"
    assert http.get("/", base_url=BASE).status_code == 200
    assert http.get("/", base_url="http://127.0.0.1:5002").status_code == 403  # a cookie per port

    other = client_app.test_client()
    assert other.get("/?token=guess", base_url=BASE).status_code == 403
    post = other.post(url.replace("/?", "/protect?"), base_url=BASE, data={"mode": "nonsense"})  # a script
    assert post.status_code == 400 and "mode" in post.get_json()["error"]
    assert other.get("/", base_url=BASE).status_code == 200

    stale = create_client_app("http://127.0.0.1:9", cfg).test_client()  # the client restarted
    stale.set_cookie(f"hashveil-client-{PORT}", c["raw"].split(";")[0].split("=", 1)[1], domain="127.0.0.1")
    assert stale.get("/", base_url=BASE).status_code == 403  # a new launch, a new token


def test_client_refuses_other_hosts_before_the_token(client_app) -> None:
    http = client_app.test_client()
    _launch(client_app, http)
    for host in ("evil.example:5001", "evil.example", "127.0.0.1:5002", "10.0.0.1:5001"):
        r = http.get("/jobs/x", base_url=BASE, headers={"Host": host})
        assert r.status_code == 400 and "hashveil client" in r.get_json()["error"], host
        _check_headers(r, host)
    r = http.post("/protect", base_url=BASE, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.get_json()["error"]

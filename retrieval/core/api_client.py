"""HTTP access to a hashveil search server's JSON API, for whoever talks to one from outside:
the user's privacy client and the auditor reading a query log.

Errors come back as ValueError carrying the server's JSON message, so callers handle an HTTP
4xx/5xx like any other bad input. ``verify`` is requests' certificate check for ``https://``
servers: True (the system's CA bundle) or the path of a CA bundle file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import requests


def raise_for_status(r: requests.Response) -> None:
    """Turn an HTTP error answer into a ValueError carrying the server's JSON message."""
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except (ValueError, AttributeError):
            message = r.text[:200]
        raise ValueError(f"server answered {r.status_code} for {r.url}: {message}")


def check_server_url(url: str) -> str:
    """An http(s) URL with a host, without its trailing slash; ValueError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"server URL must be http(s)://host[:port], e.g. http://127.0.0.1:5000; got {url!r}")
    return url.rstrip("/")


class ApiClient:
    """One server's API over a pooled HTTP session; ``token`` adds the admin bearer header."""

    def __init__(
        self, url: str, *, timeout: float = 60.0, token: str = "", verify: bool | str | Path = True
    ) -> None:
        self.url = check_server_url(url)
        self.timeout = timeout
        self.http = requests.Session()
        if isinstance(verify, (str, Path)) and not isinstance(verify, bool):
            if not Path(verify).is_file():
                raise FileNotFoundError(f"CA bundle not found: {verify}")
            verify = str(verify)
        # passed with each request: a Session's own verify loses to REQUESTS_CA_BUNDLE (psf/requests#3829)
        self.verify = verify
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _send(self, method: str, path: str, **kw) -> requests.Response:
        """One request; an untrusted certificate is an SSLError that says what to do about it."""
        try:
            r = self.http.request(method, f"{self.url}{path}", timeout=self.timeout, verify=self.verify, **kw)
        except requests.exceptions.SSLError as e:
            raise requests.exceptions.SSLError(
                f"the TLS certificate of {self.url} could not be verified ({e}); if a private CA signs "
                "it, pass that CA's certificate with --ca-bundle FILE (client.ca_bundle)"
            ) from e
        raise_for_status(r)
        return r

    def get(self, path: str, *, stream: bool = False, **params) -> requests.Response:
        return self._send("GET", path, params=params, stream=stream)

    def get_json(self, path: str, **params) -> dict:
        body = self.get(path, **params).json()
        if not isinstance(body, dict):
            raise ValueError(f"{self.url}{path} must answer a JSON object; got {str(body)[:200]}")
        return body

    def download(self, path: str, dest: Path) -> None:
        """Stream ``path`` into ``dest`` through a temporary file, renamed when complete."""
        tmp = dest.with_name(dest.name + ".part")
        with self.get(path, stream=True) as r, tmp.open("wb") as f:
            for block in r.iter_content(1 << 20):
                f.write(block)
        tmp.replace(dest)

    def search(
        self, image: bytes, *, filename: str = "query.png", mimetype: str = "image/png", **params: int | None
    ) -> dict:
        """POST an image to /api/search; ``params`` (radius, k, ...) left None are not sent."""
        form = {key: str(v) for key, v in params.items() if v is not None}
        return self._send(
            "POST", "/api/search", files={"image": (filename, image, mimetype)}, data=form
        ).json()

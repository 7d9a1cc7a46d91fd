"""Live servers for tests and benchmarks: a WSGI app in a thread, or `hashveil serve` in a child
process, each on a free loopback port and returned only once it answers."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from waitress.server import create_server


@dataclass(frozen=True)
class Received:
    """One request as the recorded app received it."""

    method: str
    path: str
    query: str
    body: bytes


class Recorder:
    """WSGI middleware: every request the wrapped app receives, in arrival order (``requests``)."""

    def __init__(self, app: Callable) -> None:
        self.app, self.requests = app, []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.requests.append(
            Received(environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), body)
        )
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def since(self, n: int) -> list[Received]:
        return self.requests[n:]

    def uploads(self, since: int = 0) -> list[bytes]:
        """The image files POSTed to /api/search, in arrival order."""
        out = []
        for r in self.requests[since:]:
            if r.method == "POST" and r.path == "/api/search":
                boundary = r.body.split(b"\r\n", 1)[0]  # multipart: parts between "\r\n--boundary"
                for part in r.body.split(b"\r\n" + boundary):
                    head, _, data = part.partition(b"\r\n\r\n")
                    if b'filename="' in head:
                        out.append(data)
        return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Callable, threads: int = 4, **options) -> Iterator[str]:
    """Serve a WSGI app with waitress on a free loopback port in a thread; yields its base URL.

    ``options``: more of waitress's keywords (e.g. trusted_proxy).
    """
    server = create_server(app, host="127.0.0.1", port=0, threads=threads, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=5)


def wait_healthy(
    url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0, log_path: Path | None = None
) -> None:
    """Return once ``url``/api/health answers; RuntimeError if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        try:
            if requests.get(f"{url}/api/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"no answer from {url}/api/health within {timeout:.0f} s"
        + (f"; log in {log_path}" if log_path else "")
    )


def start_serve(
    config_path: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.Popen:
    """`hashveil --config FILE serve --port P ARGS` in a child process, returned once it answers.

    Its output goes to ``log_path`` (default: beside the config file).
    """
    log_path = log_path or config_path.with_name(f"serve-{port}-{time.monotonic_ns()}.log")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hashveil",
                "--config",
                str(config_path),
                "serve",
                "--port",
                str(port),
                *args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout, log_path)
    except RuntimeError:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Terminate a child server, killing it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


LAUNCH_URL = re.compile(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]+")


def start_client(
    config_path: Path, server_url: str, *args: str, log_path: Path | None = None, timeout: float = 120.0
) -> tuple[subprocess.Popen, str]:
    """`hashveil --config FILE client --server URL --port 0 ARGS` in a child process.

    Returns the process and the launch URL it printed (read from its output as a user reads it).
    """
    log_path = log_path or config_path.with_name(f"client-{time.monotonic_ns()}.log")
    command = [sys.executable, "-m", "hashveil", "--config", str(config_path), "client"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*command, "--server", server_url, "--port", "0", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LAUNCH_URL.search(log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(0)
        if proc.poll() is not None:
            raise RuntimeError(
                f"hashveil client exited with {proc.returncode}: {log_path.read_text()[-3000:]}"
            )
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"hashveil client printed no URL within {timeout:.0f} s; log in {log_path}")


@contextmanager
def serve_with_log(config: Path, log_dir: Path) -> Iterator[tuple[str, Callable[[int], list]]]:
    """`hashveil serve` on ``config`` with a fresh admin token, as the benchmarks that audit their own
    uploads need it: yields the URL and ``new_rows(limit)``, the query-log rows (uploads included)
    written since the server started, read over the admin API."""
    import secrets

    from audit.logs import read_log_http

    token, port = secrets.token_urlsafe(16), free_port()
    server = start_serve(config, port, env={"HASHVEIL_ADMIN_TOKEN": token}, log_path=log_dir / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        before = max((r.id for r in read_log_http(url, token, limit=1, uploads=False)), default=0)
        yield url, lambda limit: [r for r in read_log_http(url, token, limit=limit) if r.id > before]
    finally:
        stop(server)

"""A throwaway Milvus server for tests and benchmarks: the standalone binary of the PyPI package
``milvus`` (2.3.5, "embedded Milvus"), in a temp folder, on free loopback ports.

The package's own ``MilvusServer.start`` changes the working directory of the whole process and
starts the binary in our process group, and its ``stop`` can hang; so this module uses only the
package's config writer and its bundled binaries, starts ``milvus run standalone`` in a session
of its own, waits for its health check and a client round trip, and stops it by ending that
process group (SIGTERM, then SIGKILL after a timeout). Nothing is downloaded: the binary comes
from the wheel, which ``make test`` installs with the ``test`` extra.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from testkit.servers import free_port

# Polling faster than the defaults (1 s, 0.5 s) makes a collection load sooner; nothing else changes.
_FAST = {"queryCoord.checkInterval": 200, "queryCoord.distPullInterval": 200}


@dataclass
class MilvusServer:
    """One running Milvus standalone; ``uri`` is what MilvusIndex and pymilvus take."""

    root: Path
    port: int
    health_port: int
    proc: subprocess.Popen

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "milvus-run.log"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def start_server(timeout: float = 180.0) -> MilvusServer:
    """Start Milvus standalone in a fresh temp folder; returns once it answers a client.

    FileNotFoundError when the ``milvus`` package is not installed; RuntimeError (with the
    server's log) when it does not come up in ``timeout`` seconds. A port taken between the
    probe and the bind gets two more tries.
    """
    try:
        import milvus
    except ImportError:
        raise FileNotFoundError(
            "the Milvus server tests need the PyPI package `milvus` (2.3.5, the embedded Milvus "
            "standalone binary): run `make test`, or pip install -e '.[test]'"
        ) from None
    for attempt in range(3):
        root = Path(tempfile.mkdtemp(prefix="hashveil-milvus-"))
        try:
            return _start(milvus, root, timeout)
        except RuntimeError:
            shutil.rmtree(root, ignore_errors=True)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def stop_server(server: MilvusServer, timeout: float = 2.0) -> None:
    """End the server's process group (its own stop can hang) and delete its folder."""
    try:
        _end_group(server.proc, timeout)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _start(milvus, root: Path, timeout: float) -> MilvusServer:
    config = milvus.MilvusServerConfig(data_dir=str(root))
    ports = {key: free_port() for key in config.configurable_items if key.endswith("_port")}
    config.update(**ports)
    for key, value in _FAST.items():
        config.set(key, value)
    config.resolve()  # writes root/configs/milvus.yaml
    milvus._initialize_data_files(str(root))  # unpacks the bundled binaries into root/bin
    health_port = free_port()
    bin_dir = root / "bin"
    env = {
        **os.environ,
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(health_port),
        "MILVUS_RUN_DIR": str(root / "run"),
        "LD_LIBRARY_PATH": f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    }
    (root / "logs").mkdir(exist_ok=True)
    with open(root / "logs" / "milvus-run.log", "wb") as log_file:
        proc = subprocess.Popen(
            [str(bin_dir / "milvus"), "run", "standalone"],
            cwd=root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, ended as a whole
        )
    server = MilvusServer(root, ports["proxy_port"], health_port, proc)
    try:
        _wait_ready(server, timeout)
    except RuntimeError:
        _end_group(proc, 5.0)
        raise
    return server


def _wait_ready(server: MilvusServer, timeout: float) -> None:
    """Until /healthz says OK and a client can list collections; RuntimeError if it exits or stalls."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout
    healthy = False
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"Milvus exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if not healthy:
                url = f"http://127.0.0.1:{server.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    healthy = b"OK" in resp.read()
            if healthy:
                client = MilvusClient(uri=server.uri, timeout=10)
                client.list_collections()
                client.close()
                return
        except Exception:  # refused, or pymilvus's errors while the proxy is still coming up
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Milvus did not become ready within {timeout:.0f} s:\n{server.log_tail()}")


def _end_group(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=timeout)

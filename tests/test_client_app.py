"""The privacy client app over HTTP, as a script would use it: its jobs, its errors, the file it
sends. References are independent of the app: the model's own codes, the bytes the service
actually received (recorded by a WSGI middleware). The same app in a browser: test_webui.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from retrieval.core.codes import hamming
from retrieval.core.imaging import decode_image, to_tensor
from retrieval.core.model import load_checkpoint

pytestmark = pytest.mark.slow


def _finished(http: requests.Session, url: str) -> dict:
    deadline = time.monotonic() + 180  # a bound for a stuck job, not a speed goal: CI machines may be busy
    while time.monotonic() < deadline:
        status = http.get(url, timeout=10).json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {url} did not finish in 180 s")


def test_client_modes_and_bad_input_over_http(sites, tiny_data):
    """Carrier and untargeted jobs target the right codes and send the server nothing."""
    client, recorder, http = sites["client"], sites["recorder"], sites["client_http"]
    carrier = (tiny_data / "img" / "0002.png").read_bytes()
    private = (tiny_data / "img" / "0005.png").read_bytes()
    r = http.post(
        f"{client}/protect", data={"mode": "carrier"}, files={"image": ("c.png", carrier)}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"] == "choose the private image"
    r = http.post(f"{client}/protect", files={"image": ("x.png", b"no image")}, timeout=10)
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    r = http.post(
        f"{client}/protect",
        files={"image": ("c.png", carrier)},
        timeout=10,
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403

    model, _ = load_checkpoint(sites["cfg"].work_dir / "model")
    before = len(recorder.requests)
    r = http.post(
        f"{client}/protect",
        data={"mode": "carrier", "strength": "low"},
        timeout=10,
        files={"image": ("c.png", carrier), "private": ("p.png", private)},
    )
    assert r.status_code == 202
    status = _finished(http, client + r.json()["status_url"])
    result = status["result"]
    assert status["state"] == "done" and result["target_label"] is None
    assert set(status["images"]) == {"original", "protected", "perturbation", "private"}
    assert result["eps_255"] == 4 and 0 < result["linf_255"] <= 4
    assert result["target_code"] == model.encode(to_tensor(decode_image(private))[None])[0].tobytes().hex()

    r = http.post(
        f"{client}/protect", data={"mode": "untargeted"}, files={"image": ("c.png", carrier)}, timeout=10
    )
    result = _finished(http, client + r.json()["status_url"])["result"]
    own = bytes.fromhex(result["original_code"])
    assert bytes.fromhex(result["target_code"]) == bytes(b ^ 0xFF for b in own)
    assert len(result["trace"]) == result["iterations"] + 1 and result["trace"][-1] == result["distance"]
    live = _finished(http, client + r.json()["status_url"])["trace"]  # what the page drew while it ran
    assert len(live) >= len(result["trace"]) - 1 and live == result["trace"][: len(live)]

    received = recorder.since(before)
    assert all(r.path != "/api/search" for r in received)
    assert not any(private in r.body or carrier in r.body for r in received)


def test_client_sends_a_jpeg_it_checked_as_the_server_hashes_it(sites, tiny_data):
    """--format in the client: the file sent is the JPEG the job encoded, its code computed here equals
    the server's, and the page's facts say whether that code is still at the target."""
    client, recorder, http = sites["client"], sites["recorder"], sites["client_http"]
    image = (tiny_data / "img" / "0006.png").read_bytes()
    r = http.post(f"{client}/protect", data={"format": "gif"}, files={"image": ("a.png", image)}, timeout=10)
    assert r.status_code == 400 and "format must be one of" in r.json()["error"]
    r = http.post(
        f"{client}/protect",
        data={"mode": "untargeted", "strength": "low", "format": "jpeg", "quality": "85"},
        files={"image": ("a.png", image)},
        timeout=10,
    )
    status = _finished(http, client + r.json()["status_url"])
    result = status["result"]
    got = http.get(client + status["images"]["protected"], timeout=10)
    assert got.headers["Content-Type"] == "image/jpeg" and got.content[:3] == b"\xff\xd8\xff"
    assert (result["format"], result["quality"], result["bytes"]) == ("jpeg", 85, len(got.content))
    assert result["original_bytes"] == len(image) and result["sent_bytes"] == len(got.content)
    model, _ = load_checkpoint(sites["cfg"].work_dir / "model")
    code = model.encode(to_tensor(decode_image(got.content))[None])[0]
    assert result["file_code"] == code.tobytes().hex()
    distance = int(
        hamming(code[None], np.frombuffer(bytes.fromhex(result["target_code"]), np.uint8)[None])[0, 0]
    )
    assert result["file_distance"] == distance and result["file_at_target"] == (distance == 0)
    before = len(recorder.requests)
    answer = http.post(client + status["send_url"], data={"radius": "2"}, timeout=30).json()
    (body,) = [r.body for r in recorder.since(before) if r.path == "/api/search"]
    assert got.content in body and answer["code"] == result["file_code"] and answer["server_code_matches"]

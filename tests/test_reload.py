"""LiveSearcher: when a running server switches to a new build, and when it keeps the one it has.

The opener is a stand-in here (the real one, open_searcher, is exercised with two live servers in
test_scaleout.py); what is tested is the rule: switch only to a new manifest whose set opened and
verified, keep serving the old set otherwise."""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace

import pytest

from retrieval.core.config import Config, override
from retrieval.service.reload import LiveSearcher


class FakeSearcher(SimpleNamespace):
    pass


def _searcher(name: str, url: str = "sqlite:///a.db") -> FakeSearcher:
    closed, store_closed = threading.Event(), threading.Event()
    return FakeSearcher(
        name=name,
        store=SimpleNamespace(url=url, close=store_closed.set, closed=store_closed),
        index=SimpleNamespace(ntotal=1, close=closed.set, closed=closed),
    )


@pytest.fixture()
def cfg(tmp_path) -> Config:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("v1")
    return override(Config(), paths={"work_dir": tmp_path}, server={"reload_seconds": 0.001})


def _touch(cfg: Config, text: str) -> None:
    path = cfg.work_dir / "index" / "manifest.json"
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks


def _poll(live: LiveSearcher) -> FakeSearcher:
    live._next = 0.0  # the check period has passed
    out = live.current()
    live.wait_idle()
    return out


def test_switches_to_a_new_verified_build_and_retires_the_old(cfg, monkeypatch) -> None:
    monkeypatch.setattr("retrieval.service.reload.RETIRE_AFTER", 0.0)
    old, new = _searcher("old"), _searcher("new")
    opened, verified = [], threading.Event()

    def opener(c):
        opened.append(c)
        verified.wait(5)  # opening and checking a set takes a while
        return new

    live = LiveSearcher(cfg, old, opener=opener)
    assert _poll(live) is old and opened == []  # nothing changed: nothing opened
    _touch(cfg, "v2")
    live._next = 0.0
    assert live.current() is old  # the request that notices the change is answered by the old set
    assert live.current() is old  # and so is every request until the new set has been verified
    verified.set()
    live.wait_idle()
    assert _poll(live) is new and opened == [cfg] and live.reloads == 1
    assert old.index.closed.wait(5)  # the old set's connections are closed once it is retired
    assert not old.store.closed.is_set()  # but not the first store: the query log writes to it
    newer = _searcher("newer")
    live._opener = lambda c: newer
    _touch(cfg, "v3")
    assert _poll(live) is newer and new.index.closed.wait(5) and new.store.closed.wait(5)


def test_keeps_the_old_set_while_a_build_runs_or_a_new_one_fails(cfg, caplog) -> None:
    old = _searcher("old")
    calls = []

    def broken(c):
        calls.append(c)
        raise ValueError("store codes differ from the build")

    live = LiveSearcher(cfg, old, opener=broken)
    (cfg.work_dir / "index" / "manifest.json").unlink()  # build-index removes it first
    assert _poll(live) is old and calls == []
    _touch(cfg, "v2")
    with caplog.at_level(logging.WARNING, logger="retrieval.service.reload"):
        assert _poll(live) is old and _poll(live) is old
    assert len(calls) == 1  # tried once per new manifest, not on every request
    assert "not switching to the new build" in caplog.text and "store codes differ" in caplog.text


def test_a_build_on_another_store_needs_a_restart(cfg, caplog) -> None:
    old, elsewhere = _searcher("old"), _searcher("new", url="postgresql+psycopg://db/other")
    live = LiveSearcher(cfg, old, opener=lambda c: elsewhere)
    _touch(cfg, "v2")
    with caplog.at_level(logging.WARNING, logger="retrieval.service.reload"):
        assert _poll(live) is old
    assert "restart the server to switch stores" in caplog.text


def test_reload_seconds_zero_never_looks(cfg) -> None:
    cfg = override(cfg, server={"reload_seconds": 0})
    live = LiveSearcher(cfg, _searcher("old"), opener=lambda c: pytest.fail("opened"))
    _touch(cfg, "v2")
    assert _poll(live).name == "old"
    with pytest.raises(ValueError, match="server.reload_seconds"):
        override(cfg, server={"reload_seconds": -1})

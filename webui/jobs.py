"""Background protection jobs for the privacy client: one at a time, in a thread.

A protection takes from a fraction of a second to minutes (it runs PGD on the user's CPU), so
the page starts a job, polls its status and draws the result when it is done. The attack
reports its convergence trace at the end, so while it runs a job only says which phase it is in.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from privacy.client import Protected
from privacy.encode import Encoding

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")


@dataclass
class Job:
    """One protection request and, once done, its result. Images never leave this process
    except ``pngs["protected"]`` (the protected file, in ``encoding``), and only when the user sends it."""

    mode: str
    strength: str
    target_label: str | None
    original: torch.Tensor  # (3, H, W) in [0, 1]
    private: torch.Tensor | None = None  # carrier mode: the image whose results to retrieve
    encoding: Encoding = field(default_factory=Encoding)  # the file sent: PNG, JPEG or WebP
    original_bytes: int = 0  # size of the file the user chose
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    phase: str = "waiting to start"
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: Protected | None = None
    pngs: dict[str, bytes] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # what the page shows besides the images
    search: dict[str, Any] | None = None  # the server's answer to the protected image
    trace: list[int] = field(default_factory=list)  # Hamming distance to the target so far, live

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Busy(RuntimeError):
    """A job is already running."""


class JobRunner:
    """Runs ``work(job)`` in a daemon thread, one job at a time; keeps the latest ``keep`` jobs."""

    def __init__(self, work: Callable[[Job], None], keep: int = 8) -> None:
        self._work = work
        self._keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._running: str | None = None

    def submit(self, job: Job) -> Job:
        """Start ``job``; raises :class:`Busy` while another one runs."""
        with self._lock:
            if self._running is not None:
                raise Busy("a protection is already running; wait for it to finish")
            self._running = job.id
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)
        threading.Thread(target=self._run, args=(job,), name=f"protect-{job.id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id; KeyError when it is unknown or was dropped."""
        with self._lock:
            return self._jobs[job_id]

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.monotonic()
        outcome = "failed"
        try:
            self._work(job)
            outcome = "done"
        except Exception as e:  # noqa: BLE001 -- any failure must reach the page, not kill the thread
            log.exception("protection job %s failed", job.id)
            job.error = str(e) or type(e).__name__
        finally:
            job.finished = time.monotonic()
            job.state = outcome
            with self._lock:
                self._running = None

"""Work of concurrent requests done together: a queue and one worker thread.

The server uses two. Uploads are hashed in one forward per batch (:class:`ImageEncoder`): up
to ``server.batch_max`` images, the first waiting at most ``server.batch_wait_ms`` for others,
so 32 clients share the model instead of queueing on a lock. The query log commits the rows of
concurrent requests in one transaction (retrieval.service.querylog). Each request still gets
its own answer, or its own exception, and waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np
import torch

from retrieval.core.model import ENCODE_CHUNK, HashNet
from retrieval.service.search import Searcher

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
IDLE_EXIT_S = 60.0  # a worker with nothing to do for this long ends; the next submit starts another


class Batcher(Generic[T, R]):
    """Runs ``fn(items) -> results`` (one result per item, in order) over batches of submitted items.

    Args:
        fn: the batch function; an exception it raises fails every item of its batch, an
            exception it returns as an item's result fails that item only.
        max_items: most items per batch.
        wait_s: how long a batch's first item waits for more (0: take what is queued, no wait).
        name: the worker thread's name.
    """

    def __init__(
        self, fn: Callable[[list[T]], Sequence[R]], *, max_items: int, wait_s: float, name: str
    ) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive int; got {max_items!r}")
        if not 0 <= wait_s <= 10:
            raise ValueError(f"wait_s must be in [0, 10] seconds; got {wait_s!r}")
        self.fn, self.max_items, self.wait_s, self.name = fn, max_items, wait_s, name
        self._queue: queue.SimpleQueue[tuple[T, Future, float]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, item: T) -> Future:
        """Queue one item; the future holds its result once its batch has run."""
        fut: Future = Future()
        with self._lock:  # the worker checks for an empty queue under this lock before it ends
            self._queue.put((item, fut, time.monotonic()))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._worker.start()
        return fut

    def __call__(self, item: T) -> R:
        """Submit and wait: the item's result, or its batch's exception."""
        return self.submit(item).result()

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._run(self._collect(first))

    def _collect(self, first: tuple[T, Future, float]) -> list[tuple[T, Future, float]]:
        """The first item and what joins it: all that is queued, then arrivals until the first item
        has waited ``wait_s`` since it was submitted (no longer, if it queued behind a batch)."""
        batch = [first]
        deadline = first[2] + self.wait_s
        while len(batch) < self.max_items:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self, batch: list[tuple[T, Future, float]]) -> None:
        try:
            results = self.fn([item for item, _, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for a batch of {len(batch)}")
        except BaseException as e:  # every waiting request gets the error, the worker goes on
            for _, fut, _ in batch:
                fut.set_exception(e)
            return
        for (_, fut, _), result in zip(batch, results):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)


def batches_alike(model: HashNet, seed: int = 0) -> bool:
    """Whether ``model.relaxed`` gives an image the same floats alone and in any batch, here.

    HashNet.relaxed is built for it (see there); this checks it on the model's device and thread
    count with random images: kernels that round differently by batch size differ on almost any
    input, so equal floats mean the same kernels ran.
    """
    g = torch.Generator().manual_seed(seed)
    n = ENCODE_CHUNK + 3  # a full chunk, a short one, and every position
    x = torch.rand((n, 3, model.image_size, model.image_size), generator=g).to(model.device)
    alone = torch.cat([model.relaxed(x[i : i + 1]) for i in range(n)])
    together = torch.cat([model.relaxed(x[:5]), model.relaxed(x[5:])])
    return torch.equal(alone, together) and torch.equal(model.relaxed(x.flip(0)), alone.flip(0))


class ImageEncoder:
    """Codes of single uploads, hashed in batches when that cannot change a code.

    Each upload comes with the searcher its request answers with (``LiveSearcher.current``): a
    batch that straddles a switch to a new build hashes each upload with its own set's model.
    Shape: one image (1, 3, S, S) float in [0, 1] at the model's input size -> its code (K/8,) uint8.
    """

    def __init__(self, batch_max: int, wait_ms: float, model: HashNet) -> None:
        self._alike: dict[int, bool] = {}
        if batch_max > 1 and not self._batches_alike(model):
            log.warning(
                "this device rounds the model's outputs differently by batch size: uploads are hashed "
                "one at a time so that each code is the one a client computes alone"
            )
            batch_max = 1
        self.batch_max = batch_max
        self._batcher: Batcher[tuple[Searcher, torch.Tensor], np.ndarray] = Batcher(
            self._encode,
            max_items=batch_max,
            wait_s=wait_ms / 1000 if batch_max > 1 else 0.0,
            name="hashveil-encode",
        )

    def __call__(self, searcher: Searcher, image: torch.Tensor) -> np.ndarray:
        return self._batcher((searcher, image))

    def _batches_alike(self, model: HashNet) -> bool:
        """batches_alike, checked once per model."""
        if id(model) not in self._alike:
            self._alike[id(model)] = batches_alike(model)
        return self._alike[id(model)]

    def _encode(self, items: list[tuple[Searcher, torch.Tensor]]) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (searcher, _) in enumerate(items):
            groups.setdefault(id(searcher), []).append(i)
        for rows in groups.values():
            searcher = items[rows[0]][0]
            images = torch.cat([items[i][1] for i in rows])
            if len(rows) > 1 and not self._batches_alike(searcher.model):
                codes = np.concatenate([searcher.encode(x[None]) for x in images])
            else:
                codes = searcher.encode(images)
            for i, code in zip(rows, codes):
                out[i] = code
        return out

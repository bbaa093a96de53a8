"""Dynamic batching: concurrent single-image runs of one model grouped into one batch.

A server answering one image per request runs the model once per request; on a CPU, a batch of 8
costs far less than 8 runs of one. ``DynamicBatcher.run`` takes one image (and its tabular row) from
a calling thread and returns that image's own output, while grouping the images that threads hand
in for the same key (a model version) into one batch:

- **One batch in flight per key.** The first caller to find the key idle becomes the *leader*: it
  takes the queued images (up to ``max_batch``), runs them as one batch, hands every caller its row
  and lets the next leader go. Callers that arrive while a batch runs queue up and form the next
  batch, so under load the batch size follows the arrival rate with no timer at all, and an idle
  model answers a lone request at once.
- **A short wait window.** A leader that finds fewer than ``max_batch`` images queued, while others
  are known to be on their way (``announce``: callers that said so before decoding
  their upload), waits up to ``window_s`` for them; a lone caller never waits.
- **Each caller its own answer.** Rows are split back in queue order; an exception from the run is
  raised in every caller of that batch (and the next batch still runs).

The batch itself is run by the ``runner`` callable of the leader (a ``SessionCache.run`` in practice),
so batching adds no copy of the model and no thread of its own. Pure: threads and numpy only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from inference.types import RunOutput

DEFAULT_MAX_BATCH = 8
DEFAULT_WINDOW_S = 0.005

Runner = Callable[[np.ndarray, np.ndarray | None], RunOutput]


@dataclass
class _Slot:
    x: np.ndarray  # one image: the model's input shape without the batch axis
    tabular: np.ndarray | None  # its tabular row, or None
    done: bool = False
    output: RunOutput | None = None
    error: BaseException | None = None


@dataclass
class _Lane:
    """The queue of one key."""

    queue: list[_Slot] = field(default_factory=list)
    busy: bool = False  # a leader is collecting or running a batch
    expected: int = 0  # callers that announced themselves and have not queued yet
    batches: int = 0
    images: int = 0


class DynamicBatcher:
    """Groups concurrent single-image runs per key into batches of at most ``max_batch``."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_WINDOW_S) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.max_batch = max_batch
        self.window_s = window_s
        self._lanes: dict[Hashable, _Lane] = {}
        self._cond = threading.Condition()

    def _lane(self, key: Hashable) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        return lane

    def announce(self, key: Hashable) -> None:
        """Say that a ``run`` on ``key`` will follow shortly (once its upload is decoded), so a leader may
        wait for it within the window instead of running a smaller batch. Follow with ``run(...,
        announced=True)`` or, if the image never comes, ``withdraw``."""
        with self._cond:
            self._lane(key).expected += 1

    def withdraw(self, key: Hashable) -> None:
        """An announced image will not come after all."""
        with self._cond:
            lane = self._lane(key)
            lane.expected = max(0, lane.expected - 1)
            self._cond.notify_all()

    def stats(self, key: Hashable) -> tuple[int, int]:
        """(batches run, images run) for ``key`` so far."""
        with self._cond:
            lane = self._lanes.get(key)
            return (0, 0) if lane is None else (lane.batches, lane.images)

    def run(self, key: Hashable, x: np.ndarray, tabular: np.ndarray | None, runner: Runner, *,
            announced: bool = False) -> RunOutput:
        """``x``'s own output (a batch of one: probabilities 1 x C, embeddings 1 x D or None), computed
        in a batch with whatever other images of ``key`` are queued. ``x`` has the model's input shape
        with a leading batch axis of 1 (as ``preprocess`` returns it)."""
        if x.shape[0] != 1:
            raise ValueError(f"one image at a time (got a batch of {x.shape[0]})")
        slot = _Slot(x[0], None if tabular is None else tabular[0])
        with self._cond:
            lane = self._lane(key)
            lane.queue.append(slot)
            if announced:
                lane.expected = max(0, lane.expected - 1)
            self._cond.notify_all()
        while True:
            with self._cond:
                while lane.busy and not slot.done:
                    self._cond.wait()
                if slot.done:
                    return self._result(slot)
                batch = self._lead(lane)  # FIFO: the batch may be of earlier callers; then wait again
            self._run_batch(lane, batch, runner)

    def _lead(self, lane: _Lane) -> list[_Slot]:
        """Become the leader (the condition's lock is held): wait within the window for announced callers,
        then take up to ``max_batch`` queued images."""
        lane.busy = True
        deadline = time.monotonic() + self.window_s
        while len(lane.queue) < self.max_batch and lane.expected > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        batch, lane.queue[:] = lane.queue[:self.max_batch], lane.queue[self.max_batch:]
        return batch

    def _run_batch(self, lane: _Lane, batch: list[_Slot], runner: Runner) -> None:
        try:
            xs = np.stack([s.x for s in batch])
            rows = [s.tabular for s in batch if s.tabular is not None]
            tabular = None if batch[0].tabular is None else np.stack(rows)
            out = runner(xs, tabular)
            for i, slot in enumerate(batch):
                slot.output = RunOutput(probabilities=out.probabilities[i:i + 1],
                                        embeddings=None if out.embeddings is None else out.embeddings[i:i + 1])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch, raised there
            for slot in batch:
                slot.error = exc
        finally:
            with self._cond:
                for slot in batch:
                    slot.done = True
                lane.busy = False
                lane.batches += 1
                lane.images += len(batch)
                self._cond.notify_all()

    @staticmethod
    def _result(slot: _Slot) -> RunOutput:
        if slot.error is not None:
            raise slot.error
        assert slot.output is not None
        return slot.output


_default: DynamicBatcher | None = None
_default_lock = threading.Lock()


def default_batcher() -> DynamicBatcher:
    """The process-wide batcher (batches of up to 8, a 5 ms window for announced callers)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DynamicBatcher()
        return _default

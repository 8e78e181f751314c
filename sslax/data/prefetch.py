"""Device prefetch: a background thread puts the next global batches on the mesh.

While the device runs step t, the thread reads batch t+1 from the host pipeline (tf.data's
numpy iterator) and transfers it (`sharding.make_global_batch`), so neither the Python-side
iteration nor the host-to-device copy sits between two steps. The queue is bounded (`size`
batches on device at most), the thread stops on `close()` (or leaving a `with` block), and an
exception in the pipeline is re-raised in the consumer at the batch where it happened.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

_END = object()


class _Raised:
  def __init__(self, error: BaseException):
    self.error = error


class DevicePrefetcher:
  """Iterator over put(batch) for batch in `batches`, computed `size` batches ahead.

  Args:
    batches: host iterator (e.g. `dataset.as_numpy_iterator()`).
    put: host batch -> device batch (e.g. `lambda b: sharding.make_global_batch(mesh, b)`).
    size: device batches held ahead of the consumer (>= 1); 2 overlaps one step with the
      next batch's read and copy and keeps device memory for input at two batches.

  `wait_seconds` accumulates the time `__next__` spent blocked on the queue: the input-wait
  the trainer reports (0 when the pipeline keeps up).
  """

  def __init__(
    self, batches: Iterator[Any], put: Callable[[Any], Any] = lambda b: b, size: int = 2
  ):
    if size < 1:
      raise ValueError(f"DevicePrefetcher size={size} must be >= 1 (batches held ahead).")
    self._batches, self._put = batches, put
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self.wait_seconds = 0.0
    self._thread = threading.Thread(target=self._fill, name="sslax-device-prefetch", daemon=True)
    self._thread.start()

  def _fill(self):
    try:
      for batch in self._batches:
        item = self._put(batch)
        if not self._offer(item):
          return
    except BaseException as e:  # noqa: BLE001  (re-raised in the consumer's thread)
      self._offer(_Raised(e))
      return
    self._offer(_END)

  def _offer(self, item) -> bool:
    """Blocks until there is room or close() is called; False when closed."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    t0 = time.perf_counter()
    item = self._queue.get()
    self.wait_seconds += time.perf_counter() - t0
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Raised):
      self._done = True
      raise item.error
    return item

  def close(self, timeout: float = 10.0) -> None:
    """Stops the thread and drops the batches it holds; safe to call twice."""
    self._stop.set()
    self._done = True
    while True:  # free the slots so a blocked put sees the stop flag at once
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout)

  @property
  def alive(self) -> bool:
    return self._thread.is_alive()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

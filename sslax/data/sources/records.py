"""Random-access record sources: encoded examples read one by one by global index.

`RecordSource` is what record shards (`shards.py`) and TFDS datasets prepared in ArrayRecord
format (`tfds.py`) share. A subclass says how to read example `i` as stored (`read_raw`: the
encoded image bytes, the label and the caption); this class decodes it, replaces an example
that cannot be read, parsed or decoded by the next readable index (deterministic, counted in
`replaced`, logged), tokenizes captions, and gives the tf.data pipeline one graph op per
example (`read_tf`), so a process reads exactly the records of its own stream positions:
resuming at any step reads nothing before it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from absl import logging
import numpy as np

from sslax.data import text
from sslax.data.sources.base import CorruptDatasetError

if TYPE_CHECKING:  # TensorFlow is imported lazily (reading metadata needs none of it).
  import tensorflow as tf

# Captions are tokenized at CLIP's context length, as the in-memory image-text sources do
# (sslax/data/sources/image_text.py); the model cuts them (text.fit_context).
CONTEXT_LENGTH = 77
_MAX_LOGGED = 5


class RecordSource:
  """Base of the random-access record sources (not a dataclass: subclasses are).

  Subclasses provide `name`, `channels`, `captions` (bool: examples carry a caption, and
  batches get "tokens"), `__len__`, and `read_raw(index) -> (image bytes, label, caption)`.
  """

  name: str
  channels: int
  captions: bool

  def _init_counters(self):
    self._count_lock = threading.Lock()
    self.replaced = 0  # unreadable examples replaced at read time (this process)
    self.reads = 0  # examples read (this process)

  def read_raw(self, index: int) -> tuple[bytes, int, str]:
    raise NotImplementedError

  def _count(self, what: str) -> int:
    with self._count_lock:
      setattr(self, what, getattr(self, what) + 1)
      return getattr(self, what)

  def read(self, index: int) -> tuple[np.ndarray, int, int, str]:
    """Example `index` decoded: (uint8 [H, W, channels], label, index actually read, caption).

    An example that cannot be read, parsed or decoded is replaced by the next readable index
    (wrapping): the image, label and caption are the replacement's, and so is the returned
    index (index-keyed state, e.g. a memory bank, stays consistent with the image)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

    n = len(self)
    for step in range(n):
      i = (int(index) + step) % n
      try:
        self._count("reads")
        image, label, caption = self.read_raw(i)
        pixels = tf.io.decode_image(
          image, channels=self.channels, dtype=tf.uint8, expand_animations=False
        ).numpy()
        return pixels, int(label), i, caption
      except Exception as e:  # pylint: disable=broad-except  (reader, proto and TF errors)
        if self._count("replaced") <= _MAX_LOGGED:
          logging.warning(
            "%s: example %d unreadable (%s: %.200s); using the next index",
            self.describe(),
            i,
            type(e).__name__,
            e,
          )
    raise CorruptDatasetError(f"{self.describe()}: no readable example.")

  def read_image(self, index: int) -> np.ndarray:
    """Example `index` decoded to uint8 [H, W, channels] (replaced if unreadable)."""
    return self.read(index)[0]

  def describe(self) -> str:
    return self.name

  def read_tf(self, index: tf.Tensor):
    """Graph-mode: example index -> (image uint8 [H, W, C], label int32, index int64) and, for
    a captioned source, caption tokens int32 [CONTEXT_LENGTH] as a fourth element."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

    tokenizer = text.ByteTokenizer(context_length=CONTEXT_LENGTH)

    def host(i):
      image, label, actual, caption = self.read(int(i))
      out = [image, np.int32(label), np.int64(actual)]
      if self.captions:
        out.append(tokenizer.encode(caption))
      return out

    types = [tf.uint8, tf.int32, tf.int64] + ([tf.int32] if self.captions else [])
    out = tf.py_function(host, [index], types)
    out[0].set_shape([None, None, self.channels])
    out[1].set_shape([])
    out[2].set_shape([])
    if self.captions:
      out[3].set_shape([CONTEXT_LENGTH])
    return tuple(out)

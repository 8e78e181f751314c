"""RunInfo: the facts about a run that methods and schedules need, computed once.

`sslax.setup.build` makes one from the config and the opened training source; a compile-only
check of a pod config makes one from the config alone (`RunInfo.from_config` with the example
count and channels the config declares), so no data needs to be on disk. Methods receive it in
their constructor and never open a data source or rebuild a schedule themselves (BYOL's and DINO's
`total_steps`, DINO's epoch-based schedules, SwAV's frozen prototypes all read it from here).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from sslax import optim


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Full global batches per pass over the data (the last partial batch is skipped)."""
  return max(num_examples // global_batch, 1)


@dataclasses.dataclass(frozen=True)
class RunInfo:
  total_steps: int  # optimizer steps of the whole run
  steps_per_epoch: int  # global batches per pass over the training split
  num_train_examples: int  # rows of the training split the stream draws from
  global_batch: int  # config.batch_size
  image_size: int  # side of the (global) crops the network sees
  channels: int  # input channels (1: grey, 3: RGB)
  lr_schedule: Callable  # step -> learning rate (warmup + cosine, optax schedule)

  @classmethod
  def from_config(
    cls,
    config: ml_collections.ConfigDict,
    *,
    num_train_examples: int | None = None,
    channels: int | None = None,
  ) -> "RunInfo":
    """The run's facts from the config (and, when given, the opened training source's size and
    channels). Without them the config must declare the training set's size
    (`dataset.num_train_examples`, the first n examples, or else `dataset.train_size`, the whole
    split) and `dataset.channels`: compile-only checks read nothing."""
    if num_train_examples is None:
      num_train_examples = int(config.dataset.num_train_examples) or int(
        config.dataset.get("train_size", 0)
      )
      if num_train_examples <= 0:
        raise ValueError(
          "A RunInfo without data needs the training split's size: set "
          "--config.dataset.train_size=N (ImageNet-1k: 1281167) or "
          "--config.dataset.num_train_examples=N."
        )
    if channels is None:
      channels = int(config.dataset.get("channels", 0))
      if channels <= 0:
        raise ValueError(
          "A RunInfo without data needs the input channels: set --config.dataset.channels=3 "
          "(or 1 for grey images)."
        )
    if config.batch_size > num_train_examples:
      raise ValueError(
        f"config.batch_size={config.batch_size} is larger than the {num_train_examples} "
        f"training examples; lower it or use more data."
      )
    per_epoch = steps_per_epoch(num_train_examples, config.batch_size)
    total = config.total_steps or max(int(config.total_epochs * per_epoch), 1)
    schedule = optim.lr_schedule(config.optimizer, config.batch_size, total, per_epoch)
    return cls(
      total_steps=int(total),
      steps_per_epoch=int(per_epoch),
      num_train_examples=int(num_train_examples),
      global_batch=int(config.batch_size),
      image_size=int(config.dataset.image_size),
      channels=int(channels),
      lr_schedule=schedule,
    )

  def epochs_to_steps(self, epochs: float) -> int:
    """A duration in epochs (config values such as warmup or freeze epochs) -> steps, rounded."""
    return int(round(epochs * self.steps_per_epoch))

"""The train state: one pytree that is donated to the step, sharded, and checkpointed."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any  # trainable params (float32)
  batch_stats: Any  # BatchNorm running statistics ({} for norm-free models)
  opt_state: Any
  method_state: Any  # momentum encoders, queues, centers ... ({} for SimCLR)
  rng: jax.Array  # uint32[2] raw key data: checkpoints hold plain arrays
  # The online linear probe's {"params", "opt_state"} (sslax/online_probe.py), beside the
  # method's params and optimizer so that neither sees it; {} when the probe is off.
  probe: Any = flax.struct.field(default_factory=dict)

  @property
  def key(self):
    return jax.random.wrap_key_data(self.rng)

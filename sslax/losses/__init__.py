"""Pure loss functions, one file per loss (as solo-learn), each with its own test file.

Every loss receives the *local* shard of the batch and an `axis_name` (a mesh axis or tuple of
axes) for its cross-device terms. With `axis_name=None` it is the single-device math; under
`jax.shard_map` (see `sslax.sharding.shard_over_batch`) it gathers or reduces what it needs so
the result, and its gradient, equal that math on the global batch.
"""

from sslax.losses.barlow_twins import barlow_twins_loss
from sslax.losses.byol import byol_loss
from sslax.losses.common import gather_rows, l2_normalize
from sslax.losses.moco import enqueue_keys, info_nce_queue_loss
from sslax.losses.nt_xent import nt_xent_loss
from sslax.losses.simsiam import simsiam_loss
from sslax.losses.swav import push_queue, sinkhorn_knopp, swapped_prediction_loss
from sslax.losses.vicreg import vicreg_loss

__all__ = [
  "barlow_twins_loss",
  "byol_loss",
  "gather_rows",
  "l2_normalize",
  "nt_xent_loss",
  "simsiam_loss",
  "vicreg_loss",
  "info_nce_queue_loss",
  "enqueue_keys",
  "sinkhorn_knopp",
  "swapped_prediction_loss",
  "push_queue",
]

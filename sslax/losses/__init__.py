"""Pure loss functions, one file per loss (as solo-learn), each with its own test file.

Every loss receives the *local* shard of the batch and an `axis_name` (a mesh axis or tuple of
axes) for its cross-device terms. With `axis_name=None` it is the single-device math; under
`jax.shard_map` (see `sslax.sharding.shard_over_batch`) it gathers or reduces what it needs so
the result, and its gradient, equal that math on the global batch.
"""
from sslax.losses.common import gather_rows, l2_normalize
from sslax.losses.nt_xent import nt_xent_loss

__all__ = ["gather_rows", "l2_normalize", "nt_xent_loss"]

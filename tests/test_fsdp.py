"""FSDP: the sharding rule, and an FSDP-sharded ViT train step equals the replicated one."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, random_batches
from sslax import setup as setup_lib
from sslax import sharding, train


def test_rule_picks_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((64, 256), 4, min_size=100) == P(None, "fsdp")
  assert sharding.fsdp_spec((256, 64), 4, min_size=100) == P("fsdp", None)
  assert sharding.fsdp_spec((30, 64), 4, min_size=100) == P(None, "fsdp")  # 30 % 4 != 0
  assert sharding.fsdp_spec((64, 64), 4, min_size=100) == P("fsdp", None)  # tie: the first
  assert sharding.fsdp_spec((3, 3, 1, 8), 8, min_size=10) == P(None, None, None, "fsdp")
  assert sharding.fsdp_spec((30, 30), 4, min_size=100) == P()  # none divisible
  assert sharding.fsdp_spec((8, 8), 4, min_size=100) == P()  # small: replicated
  assert sharding.fsdp_spec((64, 256), 1, min_size=100) == P()  # no fsdp axis
  assert sharding.fsdp_spec((), 4, min_size=0) == P()  # scalars


def _vit_simclr_config(fsdp_min_size):
  c = tiny_config()
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 2, 2
  c.model.patch_size = 4
  c.model.fsdp_min_size = fsdp_min_size
  # SGD, not Adam: a param whose true gradient is zero (the final LayerNorm bias before the
  # head's BatchNorm) would get Adam updates of +-lr from rounding noise, which differs
  # between any two summation orders. Momentum still gives an optimizer state to shard.
  c.optimizer.name = "sgd"
  c.optimizer.base_lr = 0.5
  c.optimizer.weight_decay = 1e-4
  return c


def _run(config, devices, mesh, batches):
  config.mesh = mesh
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  step = train.make_train_step(s)
  losses = []
  for b in batches:
    state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
    losses.append(float(metrics["loss"]))
  return state, losses


def test_fsdp_vit_train_step_equals_replicated(devices):
  batches = random_batches(2)
  # data=2 x fsdp=4: params of >= 1024 elements split 4 ways; data=8: all replicated.
  fsdp_state, fsdp_losses = _run(_vit_simclr_config(1024), devices, {"data": 2, "fsdp": 4}, batches)
  repl_state, repl_losses = _run(_vit_simclr_config(1024), devices, {"data": 8, "fsdp": 1}, batches)

  # The params (and their momentum buffers) really are sharded: each device holds a quarter.
  qkv = fsdp_state.params["backbone"]["encoder"]["block0"]["attn"]["query"]["kernel"]  # [32, 2, 16]
  assert qkv.sharding.spec == P("fsdp", None, None)
  assert qkv.addressable_shards[0].data.shape == (8, 2, 16)
  fc1 = fsdp_state.params["backbone"]["encoder"]["block1"]["mlp"]["fc1"]["kernel"]  # [32, 128]
  assert fc1.sharding.spec == P(None, "fsdp")
  mu = fsdp_state.opt_state[1][0].trace["backbone"]["encoder"]["block1"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding.spec == P(None, "fsdp")
  bias = fsdp_state.params["backbone"]["encoder"]["block1"]["mlp"]["fc1"]["bias"]  # 128: small
  assert bias.sharding.spec == P()
  assert all(x.sharding.spec == P() for x in jax.tree.leaves(repl_state.params))
  sharded = [x for x in jax.tree.leaves(fsdp_state.params) if x.sharding.spec != P()]
  assert len(sharded) >= 10

  np.testing.assert_allclose(fsdp_losses, repl_losses, rtol=1e-5)
  host = jax.device_get
  assert_trees_close(host(fsdp_state.params), host(repl_state.params), rtol=1e-4, atol=1e-6)
  # Since SimCLR's head ends in BatchNorm (as the reference), its gradients are sums of g * x_hat
  # with heavy cancellation: reduction order alone moves a few of Adam's moments by ~2e-5.
  assert_trees_close(host(fsdp_state.opt_state), host(repl_state.opt_state), rtol=1e-3, atol=1e-4)
  # ... and the step changed them (the comparison is not between two untouched inits).
  init = host(
    setup_lib.init_state(setup_lib.build(_vit_simclr_config(1024), devices=devices)).params
  )
  change = max(
    float(np.abs(a - b).max())
    for a, b in zip(jax.tree.leaves(host(fsdp_state.params)), jax.tree.leaves(init))
  )
  assert change > 1e-4

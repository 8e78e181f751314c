"""The README's "Adding a method" example (examples/align_uniform.py) is a real method: its loss
matches the paper's formula, 8 devices give the single-device value, and it trains."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import sharding, train

from testkit import REPO  # noqa: E402

sys.path.insert(0, REPO)
from examples import align_uniform  # noqa: E402  (registers the method)


def _numpy_loss(z1, z2, alpha=2.0, t=2.0):
  """Wang & Isola's reference: align_loss + (uniform_loss(x) + uniform_loss(y)) / 2, with
  uniform_loss = log mean over pairs i < j of exp(-t ||x_i - x_j||^2) (torch.pdist)."""
  z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  align = np.mean(np.linalg.norm(z1 - z2, axis=1) ** alpha)

  def uniform(x):
    i, j = np.triu_indices(len(x), k=1)
    return np.log(np.mean(np.exp(-t * np.sum((x[i] - x[j]) ** 2, axis=1))))

  return align + (uniform(z1) + uniform(z2)) / 2


def test_loss_matches_the_papers_formula_on_one_and_eight_devices(devices):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 16, 8)).astype(np.float32)
  one, _ = align_uniform.align_uniform_loss(jnp.asarray(z1), jnp.asarray(z2))
  np.testing.assert_allclose(float(one), _numpy_loss(z1.astype(np.float64), z2), rtol=1e-5)
  mesh = sharding.make_mesh({"data": -1}, devices)
  eight = sharding.shard_over_batch(
    lambda a, b, axis_name: align_uniform.align_uniform_loss(a, b, axis_name=axis_name),
    mesh,
    num_args=2,
  )
  loss8, metrics8 = jax.jit(eight)(z1, z2)
  np.testing.assert_allclose(float(loss8), float(one), rtol=1e-5)
  grad1 = jax.grad(lambda a: align_uniform.align_uniform_loss(a, z2)[0])(z1)
  grad8 = jax.grad(lambda a: eight(a, z2)[0])(z1)
  np.testing.assert_allclose(grad8, grad1, rtol=1e-4, atol=1e-6)


def test_the_example_trains_a_few_steps(tmp_path):
  c = tiny_config("align_uniform")
  c.align_uniform.proj_hidden_dim, c.align_uniform.proj_dim = 32, 16
  c.total_steps = 3
  c.log_every_steps = 1
  out = train.train(c, str(tmp_path))
  assert out["status"] == "done" and out["step"] == 3
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["uniform"]) for r in rows)
  # The trained encoder moved away from its initialisation.
  init = jax.device_get(setup_lib.init_state(out["setup"]).params["backbone"])
  trained = jax.device_get(out["state"].params["backbone"])
  change = max(
    float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(trained))
  )
  assert change > 1e-4

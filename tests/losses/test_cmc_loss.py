"""CMC's two-view losses: the paper's L -> ab + ab -> L in NumPy (in-batch negatives, and the
reference's two memory banks), 8 devices == 1 device for loss, gradients and banks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from testkit.steps import check_loss_eight_devices_equal_one

from sslax import sharding
from sslax.losses import cmc, instdisc

AXES = sharding.BATCH_AXES


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def batch_loss_numpy(l, ab, tau):
  """sum over both directions of -1/B sum_i log exp(a_i.c_i / T) / sum_j exp(a_i.c_j / T)."""

  def direction(a, c):
    logits = unit(a) @ unit(c).T / tau
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return np.mean(lse - np.diag(logits))

  return direction(l, ab), direction(ab, l)


def nce_numpy(dots, tau, n):
  """NCECriterion on exp(s / T) / Z, Z = N mean exp(s / T) of this (first) batch."""
  out = np.exp(dots / tau)
  p, m, pn = out / (out.mean() * n), dots.shape[1] - 1, 1.0 / n
  log_d1 = np.log(p[:, 0] / (p[:, 0] + m * pn))
  log_d0 = np.log(m * pn / (p[:, 1:] + m * pn))
  return -(log_d1.sum() + log_d0.sum()) / dots.shape[0]


def test_batch_loss_is_both_directions_of_the_paper_formula():
  rng = np.random.default_rng(0)
  l, ab = rng.normal(size=(8, 6)), rng.normal(size=(8, 6))
  ab[:4] += 2 * l[:4]  # half the pairs agree: accuracy strictly between 0 and 1
  loss, metrics = cmc.cross_view_batch_loss(jnp.asarray(l), jnp.asarray(ab), 0.07)
  l_loss, ab_loss = batch_loss_numpy(l, ab, 0.07)
  np.testing.assert_allclose(float(loss), l_loss + ab_loss, rtol=1e-5)  # train_CMC: the sum
  unit_l, unit_ab = unit(l), unit(ab)
  l_acc = np.mean(np.argmax(unit_l @ unit_ab.T, 1) == np.arange(8))
  ab_acc = np.mean(np.argmax(unit_ab @ unit_l.T, 1) == np.arange(8))
  assert float(metrics["l_to_ab_acc"]) == pytest.approx(l_acc)
  assert float(metrics["ab_to_l_acc"]) == pytest.approx(ab_acc)
  assert 0 < float(metrics["contrastive_acc"]) < 1


def test_batch_loss_eight_devices_equal_one_device(devices):
  rng = np.random.default_rng(1)
  l = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  ab = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  loss, grads = check_loss_eight_devices_equal_one(
    lambda a, b, axis_name: cmc.cross_view_batch_loss(a, b, 0.1, axis_name=axis_name)[0],
    [l, ab],
    devices,
  )
  np.testing.assert_allclose(loss, sum(batch_loss_numpy(l, ab, 0.1)), rtol=1e-5)
  assert min(np.abs(g).max() for g in grads) > 1e-3  # both encoders get a gradient


def _bank_problem(b=16, n=40, d=8, m=5):
  rng = np.random.default_rng(2)
  l, ab = rng.normal(size=(b, d)), rng.normal(size=(b, d))
  rows = instdisc.bank_rows(n)
  bank_l = np.asarray(instdisc.init_bank(jax.random.key(1), rows, d))
  bank_ab = np.asarray(instdisc.init_bank(jax.random.key(2), rows, d))
  labels = rng.permutation(n)[:b].astype(np.int32)
  noise = rng.integers(0, n, size=(b, m)).astype(np.int32)
  return [np.asarray(a, np.float32) for a in (l, ab)] + [labels, noise, bank_l, bank_ab]


def _bank_run(mesh_shape, devices, l, ab, labels, noise, bank_l, bank_ab):
  mesh = sharding.make_mesh(mesh_shape, devices)
  bank_axis = "fsdp" if mesh.shape["fsdp"] > 1 else None
  bank_spec = P("fsdp", None) if bank_axis else P()

  def local(l, ab, y, noise, bank_l, bank_ab):
    value, metrics, banks, zs = cmc.cross_view_bank_loss(
      l,
      ab,
      y,
      noise,
      bank_l,
      bank_ab,
      jnp.float32(-1.0),
      jnp.float32(-1.0),
      temperature=0.1,
      momentum=0.5,
      num_examples=40,
      axis_name=AXES,
      bank_axis=bank_axis,
    )
    return value, (metrics, banks)

  fn = jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(P(AXES),) * 4 + (bank_spec, bank_spec),
    out_specs=(P(), (P(), (bank_spec, bank_spec))),
  )
  put = lambda a, spec: jax.device_put(a, jax.sharding.NamedSharding(mesh, spec))
  args = [put(a, P(AXES)) for a in (l, ab, labels, noise)] + [
    put(bank_l, bank_spec),
    put(bank_ab, bank_spec),
  ]
  (value, (metrics, banks)), grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(
    *args
  )
  return jax.device_get((value, grads, metrics, banks))


def test_bank_loss_crosses_the_banks_and_eight_devices_equal_one(devices):
  l, ab, labels, noise, bank_l, bank_ab = problem = _bank_problem()
  one = _bank_run({"data": 1}, devices[:1], *problem)
  # The reference's NCEAverage: L against the ab bank, ab against the L bank, same rows.
  idx = np.concatenate([labels[:, None], noise], 1)
  dots_l = np.einsum("bkd,bd->bk", bank_ab[idx].astype(np.float64), unit(l))
  dots_ab = np.einsum("bkd,bd->bk", bank_l[idx].astype(np.float64), unit(ab))
  np.testing.assert_allclose(one[2]["l_loss"], nce_numpy(dots_l, 0.1, 40), rtol=1e-5)
  np.testing.assert_allclose(one[2]["ab_loss"], nce_numpy(dots_ab, 0.1, 40), rtol=1e-5)
  np.testing.assert_allclose(one[0], one[2]["l_loss"] + one[2]["ab_loss"], rtol=1e-6)
  # Each bank moves towards its own view's features.
  for bank, feats, new in ((bank_l, l, one[3][0]), (bank_ab, ab, one[3][1])):
    v = 0.5 * bank[labels] + 0.5 * unit(feats)
    np.testing.assert_allclose(
      new[labels], v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
    )
  for mesh_shape in ({"data": 8}, {"data": 2, "fsdp": 4}):
    eight = _bank_run(mesh_shape, devices, *problem)
    np.testing.assert_allclose(eight[0], one[0], rtol=1e-5, err_msg=str(mesh_shape))
    for a, b in zip(eight[1], one[1]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=str(mesh_shape))
    for a, b in zip(eight[3], one[3]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=str(mesh_shape))
  assert min(np.abs(g).max() for g in one[1]) > 1e-3

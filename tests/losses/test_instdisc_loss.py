"""InstDisc's memory-bank losses and bank update: the reference's formulas in NumPy, and 8
devices == 1 device (bank whole on every device, or split by rows over "fsdp")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.losses import instdisc

AXES = sharding.BATCH_AXES
EPS = 1e-7  # lemniscate's NCECriterion


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def nce_numpy(dots, z, tau, n):
  """lemniscate NCEAverage + NCECriterion: P = exp(s / T) / Z (Z = N mean exp(s / T) over the
  first batch when unset), -1/B [sum log P_0 / (P_0 + m Pn + eps) + sum log m Pn / (P_j + m Pn
  + eps)]."""
  out = np.exp(np.asarray(dots, np.float64) / tau)
  z = out.mean() * n if z <= 0 else z
  p, m, pn = out / z, dots.shape[1] - 1, 1.0 / n
  log_d1 = np.log(p[:, 0] / (p[:, 0] + m * pn + EPS))
  log_d0 = np.log(m * pn / (p[:, 1:] + m * pn + EPS))
  return -(log_d1.sum() + log_d0.sum()) / dots.shape[0], z, p


def softmax_numpy(x, bank, labels, tau, n):
  """LinearAverage + CrossEntropyLoss over the first n bank rows."""
  logits = unit(x) @ np.asarray(bank, np.float64)[:n].T / tau
  lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
  return np.mean(lse - logits[np.arange(len(labels)), labels])


def update_numpy(bank, feats, labels, mu):
  """v_y <- (mu v_y + (1 - mu) f) / ||.||, row by row (index_copy_ of the reference)."""
  bank = np.array(bank, np.float64)
  new = mu * bank[labels] + (1 - mu) * unit(feats)
  bank[labels] = new / np.linalg.norm(new, axis=1, keepdims=True)
  return bank


def _problem(b=16, n=40, d=8, m=5, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, d)).astype(np.float32)
  bank = np.asarray(instdisc.init_bank(jax.random.key(seed), instdisc.bank_rows(n), d))
  labels = rng.permutation(n)[:b].astype(np.int32)
  noise = rng.integers(0, n, size=(b, m)).astype(np.int32)
  return x, bank, labels, noise


def test_bank_rows_and_init_follow_the_reference():
  assert (instdisc.bank_rows(40), instdisc.bank_rows(1024), instdisc.bank_rows(1281167)) == (
    1024,
    1024,
    1252 * 1024,
  )
  bank = np.asarray(instdisc.init_bank(jax.random.key(0), 4096, 128))
  a = np.sqrt(3 / 128)
  assert bank.min() >= -a and bank.max() <= a and bank.min() < -0.99 * a
  np.testing.assert_allclose(np.mean(np.sum(bank**2, axis=1)), 1.0, atol=0.02)  # ~unit rows


@pytest.mark.parametrize("z", [-1.0, 3000.0])
def test_nce_loss_is_the_reference_criterion(z):
  rng = np.random.default_rng(1)
  dots = np.clip(rng.normal(0.2, 0.4, size=(6, 9)), -1, 1).astype(np.float32)
  dots[0, 0] = 0.99  # one confident positive: P_0 well above the noise mass
  loss, metrics, z_used = instdisc.nce_loss(
    jnp.asarray(dots), jnp.float32(z), temperature=0.07, num_examples=500
  )
  expected, expected_z, p = nce_numpy(dots, z, 0.07, 500)
  np.testing.assert_allclose(float(z_used), expected_z, rtol=1e-5)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["positive_prob"]), p[:, 0].mean(), rtol=1e-5)
  acc = np.mean(dots[:, 0] > dots[:, 1:].max(1))
  assert 0 < acc < 1 and float(metrics["contrastive_acc"]) == pytest.approx(acc)


def test_nce_gradient_treats_z_as_a_constant():
  """dL/ds_0 = -(1/B) mPn / (P_0 + mPn) / T, dL/ds_j = (1/B) P_j / (P_j + mPn) / T: the
  reference's backward (NCEFunction: gradOutput * out / T), Z fixed even on the first batch."""
  rng = np.random.default_rng(2)
  dots = np.clip(rng.normal(0.1, 0.3, size=(4, 7)), -1, 1).astype(np.float32)
  n, tau = 300, 0.1
  grad = jax.grad(
    lambda s: instdisc.nce_loss(s, jnp.float32(-1.0), temperature=tau, num_examples=n)[0]
  )(jnp.asarray(dots))
  _, _, p = nce_numpy(dots, -1.0, tau, n)
  c = 6 / n
  expected = p / (p + c) / tau / 4
  expected[:, 0] = -c / (p[:, 0] + c) / tau / 4
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-4, atol=1e-9)


def test_bank_dots_full_softmax_and_update_match_numpy():
  x, bank, labels, noise = _problem()
  n = 40
  idx = np.concatenate([labels[:, None], noise], 1)
  dots = instdisc.bank_dots(jnp.asarray(x), jnp.asarray(bank), jnp.asarray(idx))
  np.testing.assert_allclose(
    np.asarray(dots), np.einsum("bkd,bd->bk", bank[idx], x), rtol=1e-5, atol=1e-6
  )
  loss, metrics = instdisc.full_softmax_loss(
    jnp.asarray(unit(x), jnp.float32),
    jnp.asarray(bank),
    jnp.asarray(labels),
    temperature=0.07,
    num_examples=n,
  )
  np.testing.assert_allclose(float(loss), softmax_numpy(x, bank, labels, 0.07, n), rtol=1e-5)
  new = instdisc.update_bank(jnp.asarray(bank), jnp.asarray(x), jnp.asarray(labels), momentum=0.5)
  np.testing.assert_allclose(
    np.asarray(new), update_numpy(bank, x, labels, 0.5), rtol=1e-5, atol=1e-6
  )
  # Rows of other examples, and the padding rows past N, are untouched.
  others = np.setdiff1d(np.arange(len(bank)), labels)
  np.testing.assert_array_equal(np.asarray(new)[others], bank[others])


def test_negative_indices_are_never_written():
  x, bank, labels, _ = _problem()
  labels[:3] = -1  # a streamed source's "no index"
  new = instdisc.update_bank(jnp.asarray(bank), jnp.asarray(x), jnp.asarray(labels), momentum=0.5)
  expected = update_numpy(bank, x[3:], labels[3:], 0.5)
  np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-6)


def _run(mesh_shape, devices, loss, x, labels, noise, bank, z):
  """value_and_grad wrt x of memory_bank_loss + the updated bank and z, on a mesh; the bank
  split over "fsdp" when the mesh has one (as the FSDP rule places it)."""
  mesh = sharding.make_mesh(mesh_shape, devices)
  bank_axis = "fsdp" if mesh.shape["fsdp"] > 1 else None
  bank_spec = P("fsdp", None) if bank_axis else P()

  def local(x, y, noise, bank, z):
    value, metrics, z = instdisc.memory_bank_loss(
      x,
      y,
      noise,
      bank,
      z,
      loss=loss,
      temperature=0.1,
      num_examples=40,
      axis_name=AXES,
      bank_axis=bank_axis,
    )
    bank = instdisc.update_bank(bank, x, y, momentum=0.5, axis_name=AXES, bank_axis=bank_axis)
    return value, (metrics, bank, z)

  fn = jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(P(AXES),) * 3 + (bank_spec, P()),
    out_specs=(P(), (P(), bank_spec, P())),
  )
  put = lambda a, spec: jax.device_put(a, jax.sharding.NamedSharding(mesh, spec))
  (value, (metrics, new_bank, z)), grad = jax.jit(jax.value_and_grad(fn, has_aux=True))(
    put(x, P(AXES)), put(labels, P(AXES)), put(noise, P(AXES)), put(bank, bank_spec), z
  )
  if bank_axis:  # really split: each device holds a quarter of the rows
    assert new_bank.addressable_shards[0].data.shape[0] == bank.shape[0] // 4
  return jax.device_get((value, grad, metrics, new_bank, z))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_eight_devices_equal_one_device_loss_grads_and_bank(loss, devices):
  x, bank, labels, noise = _problem()
  z = jnp.float32(-1.0)
  one = _run({"data": 1}, devices[:1], loss, x, labels, noise, bank, z)
  for mesh_shape in ({"data": 8}, {"data": 2, "fsdp": 4}):
    eight = _run(mesh_shape, devices, loss, x, labels, noise, bank, z)
    np.testing.assert_allclose(eight[0], one[0], rtol=1e-5, err_msg=str(mesh_shape))
    np.testing.assert_allclose(eight[1], one[1], rtol=1e-4, atol=1e-7, err_msg=str(mesh_shape))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), eight[2], one[2])
    np.testing.assert_allclose(eight[3], one[3], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(eight[4], one[4], rtol=1e-5)
  # ... and the single device is the plain math: the NumPy loss and bank.
  if loss == "nce":
    idx = np.concatenate([labels[:, None], noise], 1)
    dots = np.einsum("bkd,bd->bk", bank[idx].astype(np.float64), unit(x))
    expected, expected_z, _ = nce_numpy(dots, -1.0, 0.1, 40)
    np.testing.assert_allclose(one[4], expected_z, rtol=1e-5)
  else:
    expected = softmax_numpy(x, bank, labels, 0.1, 40)
  np.testing.assert_allclose(one[0], expected, rtol=1e-5)
  np.testing.assert_allclose(one[3], update_numpy(bank, x, labels, 0.5), rtol=1e-5, atol=1e-6)
  assert np.abs(one[1]).max() > 1e-3  # a gradient reaches the features

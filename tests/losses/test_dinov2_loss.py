"""DINOv2's losses against independent NumPy versions of the reference's formulas, and 8 fake
devices == 1 device on the global batch (loss and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax.losses import dinov2, swav
from testkit.steps import check_loss_eight_devices_equal_one


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_koleo(x, eps=1e-8):
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
  dots = x @ x.T
  np.fill_diagonal(dots, -1.0)  # the reference's trick (dots of unit vectors are >= -1)
  nn = dots.argmax(1)
  d = np.linalg.norm(x - x[nn] + eps, axis=1)
  return -np.log(d + eps).mean()


def np_ibot(student, teacher, mask, temp):
  ce = -(teacher * _np_log_softmax(student / temp)).sum(-1)  # [B, N]
  per_sample = (ce * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
  return per_sample.mean()


def np_sinkhorn(logits, temp, iters=3):
  q = np.exp((logits - logits.max()) / temp).T  # K x B, as the reference
  k, b = q.shape
  q /= q.sum()
  for _ in range(iters):
    q /= q.sum(1, keepdims=True)
    q /= k
    q /= q.sum(0, keepdims=True)
    q /= b
  return (q * b).T


def test_koleo_equals_numpy():
  x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
  np.testing.assert_allclose(dinov2.koleo_loss(jnp.asarray(x)), np_koleo(x), rtol=1e-5)


def test_koleo_rises_when_two_rows_nearly_coincide():
  x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
  y = x.copy()
  y[1] = y[0] + 1e-3
  assert dinov2.koleo_loss(jnp.asarray(y)) > dinov2.koleo_loss(jnp.asarray(x)) + 0.3


def test_koleo_eight_devices_equal_one(devices):
  x = np.random.default_rng(2).normal(size=(32, 8)).astype(np.float32)
  loss, (grad,) = check_loss_eight_devices_equal_one(
    lambda x, axis_name: dinov2.koleo_loss(x, axis_name=axis_name), [x], devices
  )
  np.testing.assert_allclose(loss, np_koleo(x), rtol=1e-5)
  assert np.abs(grad).max() > 0


def _patches(seed=0, b=16, n=6, k=10):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(b, n, k)).astype(np.float32)
  teacher = jax.nn.softmax(rng.normal(size=(b, n, k)), -1)
  mask = rng.random((b, n)) < 0.4
  mask[::2] = False  # half the samples unmasked, as DINOv2's mask_sample_probability 0.5
  return student, np.asarray(teacher, np.float32), mask


def test_ibot_counts_masked_patches_only():
  student, teacher, mask = _patches()
  got = dinov2.ibot_patch_loss(student, teacher, mask, 0.1)
  np.testing.assert_allclose(got, np_ibot(student, teacher, mask, 0.1), rtol=1e-5)
  # Changing an unmasked patch's prediction changes nothing.
  other = student.copy()
  other[~mask] = np.random.default_rng(9).normal(size=other[~mask].shape)
  np.testing.assert_allclose(dinov2.ibot_patch_loss(other, teacher, mask, 0.1), got, rtol=1e-6)


def test_ibot_eight_devices_equal_one(devices):
  student, teacher, mask = _patches(1)
  check_loss_eight_devices_equal_one(
    lambda s, t, m, axis_name: dinov2.ibot_patch_loss(s, t, m, 0.1, axis_name=axis_name),
    [student, teacher, mask.astype(np.float32)],  # 0/1 floats: value_and_grad takes no bools
    devices,
  )


def test_sinkhorn_teacher_equals_numpy_on_class_tokens():
  logits = np.random.default_rng(3).normal(size=(24, 12)).astype(np.float32)
  got = dinov2.sinkhorn_knopp_teacher(jnp.asarray(logits), 0.07)
  np.testing.assert_allclose(
    got, np_sinkhorn(logits.astype(np.float64), 0.07), rtol=2e-4, atol=1e-12
  )


def test_sinkhorn_teacher_on_masked_patches_is_numpy_on_the_masked_rows_alone():
  _, _, mask = _patches(4, k=12)
  logits = np.random.default_rng(5).normal(size=mask.shape + (12,)).astype(np.float32)
  got = np.asarray(dinov2.sinkhorn_knopp_teacher(jnp.asarray(logits), 0.07, mask=mask))
  np.testing.assert_allclose(
    got[mask], np_sinkhorn(logits[mask].astype(np.float64), 0.07), rtol=2e-4
  )
  assert np.all(got[~mask] == 0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_sinkhorn_teacher_eight_devices_equal_one(devices, with_mask):
  _, _, mask = _patches(6, b=16, k=12)
  logits = np.random.default_rng(7).normal(size=mask.shape + (12,)).astype(np.float32)

  def targets(x, m, axis_name):
    # The codes carry no gradient, so d/dx sum(q * x) = q: the gradients compare the codes.
    q = dinov2.sinkhorn_knopp_teacher(x, 0.07, mask=m if with_mask else None, axis_name=axis_name)
    total = jnp.sum(q * x)
    return total if axis_name is None else jax.lax.psum(total, axis_name)

  check_loss_eight_devices_equal_one(targets, [logits, mask.astype(np.float32)], devices, rtol=1e-4)


def test_swav_codes_unchanged_without_sample_weights():
  scores = np.random.default_rng(8).normal(size=(16, 10)).astype(np.float32)
  ones = jnp.ones((16,))
  np.testing.assert_allclose(
    swav.sinkhorn_knopp(jnp.asarray(scores), sample_weights=ones),
    swav.sinkhorn_knopp(jnp.asarray(scores)),
    rtol=1e-6,
  )


def _gathered(student, teacher, mask, pad=5):
  """The masked rows of [b, N, K] arrays in a padded buffer, with the reference's masks_weight."""
  counts = mask.sum(1)
  rows = [(i, j) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j]]
  k = student.shape[-1]
  s = np.zeros((len(rows) + pad, k), np.float32)
  t = np.zeros((len(rows) + pad, k), np.float32)
  w = np.zeros((len(rows) + pad,), np.float32)
  for r, (i, j) in enumerate(rows):
    s[r], t[r], w[r] = student[i, j], teacher[i, j], 1.0 / counts[i]
  s[len(rows) :] = np.random.default_rng(11).normal(size=(pad, k))  # padding rows: any value
  return s, t, w


def test_ibot_gathered_buffer_equals_numpy_on_the_dense_patches():
  student, teacher, mask = _patches(12)
  s, t, w = _gathered(student, teacher, mask)
  got = dinov2.ibot_patch_loss_gathered(s, t, w, mask.shape[0], 0.1)
  np.testing.assert_allclose(got, np_ibot(student, teacher, mask, 0.1), rtol=1e-5)


def test_ibot_gathered_eight_devices_equal_one(devices):
  student, teacher, mask = _patches(13, b=16)
  s, t, w = _gathered(student, teacher, mask, pad=(-mask.sum()) % 8 + 8)  # rows divisible by 8
  check_loss_eight_devices_equal_one(
    lambda s, t, w, axis_name: dinov2.ibot_patch_loss_gathered(
      s, t, w, mask.shape[0], 0.1, axis_name=axis_name
    ),
    [s, t, w],
    devices,
  )


def test_patch_center_is_the_mean_over_masked_rows_only():
  rng = np.random.default_rng(14)
  logits = rng.normal(size=(10, 6)).astype(np.float32)
  valid = np.arange(10) < 7
  center = rng.normal(size=(6,)).astype(np.float32)
  got = dinov2.update_patch_center(jnp.asarray(center), logits, jnp.asarray(valid), 0.9)
  np.testing.assert_allclose(got, 0.9 * center + 0.1 * logits[:7].mean(0), rtol=1e-5)

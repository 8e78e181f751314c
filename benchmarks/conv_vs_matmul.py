r"""Where XLA:CPU loses to PyTorch on the ResNet step: one 3x3 convolution vs a matmul of the
same FLOPs, forward + backward, in jax and in torch eager on the same threads.

  python benchmarks/conv_vs_matmul.py      # ~2 min on 2 cores; needs torch (pip install -e .[bench])

Writes benchmarks/results/conv_vs_matmul.{json,md}. The matmul is the convolution's im2col
form ([B*H*W, 9*C] x [9*C, C]), so both do the same multiply-adds.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_time(fn, repeats: int = 5) -> float:
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def measure(channels: int, batch: int = 512, size: int = 32) -> list[dict]:
  import torch

  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  x = rng.random((batch, size, size, channels), np.float32)
  w = 0.1 * rng.random((3, 3, channels, channels), np.float32)

  def conv_loss(x, w):
    y = jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.sum(y**2)

  conv_grad = jax.jit(jax.grad(conv_loss, argnums=(0, 1)))
  xj, wj = jnp.asarray(x), jnp.asarray(w)
  xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
  wt = torch.tensor(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)

  def torch_conv():
    xt.grad = wt.grad = None
    (torch.nn.functional.conv2d(xt, wt, padding=1) ** 2).sum().backward()

  a = rng.random((batch * size * size, 9 * channels), np.float32)
  b = rng.random((9 * channels, channels), np.float32)
  mm_grad = jax.jit(jax.grad(lambda a, b: jnp.sum((a @ b) ** 2), argnums=(0, 1)))
  aj, bj = jnp.asarray(a), jnp.asarray(b)
  at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)

  def torch_mm():
    at.grad = bt.grad = None
    ((at @ bt) ** 2).sum().backward()

  rows = []
  for op, jax_fn, torch_fn in (
    ("conv3x3", lambda: jax.block_until_ready(conv_grad(xj, wj)), torch_conv),
    ("matmul (im2col size)", lambda: jax.block_until_ready(mm_grad(aj, bj)), torch_mm),
  ):
    tj, tt = _median_time(jax_fn), _median_time(torch_fn)
    rows.append(
      {
        "op": op,
        "channels": channels,
        "batch": batch,
        "size": size,
        "jax_ms": round(1e3 * tj, 1),
        "torch_ms": round(1e3 * tt, 1),
        "jax_speed_over_torch": round(tt / tj, 2),
      }
    )
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main():
  rows = [r for c in (16, 64) for r in measure(c)]
  out = os.path.join(HERE, "results", "conv_vs_matmul")
  meta = {
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "load_average": os.getloadavg()[0],
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  with open(out + ".json", "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  lines = [
    f"# Forward + backward of one op, jax (XLA:CPU) vs torch eager; {meta['cpu_count']} cores, "
    f"load {meta['load_average']:.1f}, {meta['timestamp']}",
    "",
    "| op | channels | jax ms | torch ms | jax speed / torch |",
    "|---|---|---|---|---|",
  ]
  lines += [
    f"| {r['op']} | {r['channels']} | {r['jax_ms']} | {r['torch_ms']} | {r['jax_speed_over_torch']}x |"
    for r in rows
  ]
  with open(out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()

"""sslax.aot: a pod config's train step compiled for a TPU topology on this CPU machine."""

import os
import subprocess
import sys

import pytest

from sslax import aot
from tests.testkit import REPO

HLO = """
  %all-reduce.1 = (f32[8]{0:T(128)}, bf16[3,3,8,8]{3,2,1,0:T(8,128)(2,1)}) all-reduce(f32[8]{0} %a, bf16[3,3,8,8]{3,2,1,0} %b), replica_groups={}
  %all-gather-start = (f32[4,16]{1,0}, f32[16,16]{1,0}) all-gather-start(f32[4,16]{1,0} %c), dimensions={0}
  %fusion.2 = f32[16,16]{1,0} fusion(f32[16,16]{1,0} %all-gather-done), kind=kLoop, calls=%fused
  %rs = f32[4]{0} reduce-scatter(f32[16]{0} %d), dimensions={0}
"""


def test_collectives_reads_tuples_layouts_and_async_outputs():
  found = aot.collectives(HLO)
  assert found["all-reduce"] == {"count": 1, "bytes": 8 * 4 + 9 * 64 * 2}
  assert found["all-gather"] == {"count": 1, "bytes": 16 * 16 * 4}  # the output, not the operand
  assert found["reduce-scatter"] == {"count": 1, "bytes": 16}
  assert "fusion" not in found


def test_importing_aot_leaves_the_platform_alone():
  """A library user (benchmarks/device_check.py on a GPU) imports sslax.aot: jax must keep
  the platform the environment names; only `python -m sslax.aot` pins its backends to CPU."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = (
    "import os, sslax.aot, jax; print(os.environ.get('JAX_PLATFORMS'), jax.config.jax_platforms)"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["None", "None"], out.stdout


def test_ici_bytes_follow_ring_algorithms():
  found = {"all-reduce": {"count": 1, "bytes": 1000}, "all-gather": {"count": 1, "bytes": 400}}
  assert aot.ici_bytes(found, 4) == pytest.approx(2 * 0.75 * 1000 + 0.75 * 400)
  assert aot.ici_bytes(found, 1) == 0.0


def test_v4_topologies_are_refused_with_the_alternatives():
  with pytest.raises(ValueError, match="v5p"):
    aot.chip_of("v4:2x2x1")


@pytest.mark.parametrize("name", ["beitv2_vitb16_tpu", "vqkd_vitb16_tpu"])
def test_compile_overrides_replace_the_runs_a_recipe_reads(name, devices):
  """A recipe that reads another run when it starts (BEiT's tokenizer, VQ-KD's teacher) names
  in AOT_OVERRIDES what a compile check uses instead; without them the build fails naming the
  missing run, with them the whole train state's shapes build from the config alone."""
  import jax

  from sslax import config as config_lib
  from sslax import setup as setup_lib

  path = os.path.join(REPO, "configs", f"{name}.py")
  overrides = aot.compile_overrides(path)
  assert overrides
  config, _ = aot.load_config_file(path)
  with pytest.raises((ValueError, FileNotFoundError), match="workdir"):
    setup_lib.build(config, devices=devices[:1], data_free=True).abstract_state
  config_lib.apply_overrides(config, overrides)
  state = setup_lib.build(config, devices=devices[:1], data_free=True).abstract_state
  assert jax.tree.leaves(state.params)


_COMPILE = """
import json, sys
from sslax import aot
config, topology = aot.load_config_file("configs/simclr_tpu.py")
assert topology, "configs/simclr_tpu.py declares TPU_TOPOLOGY"
# The recipe at toy size: ResNet-18 at 1/16 width, 32 px, 2 images per chip.
config.model.depth, config.model.width, config.dataset.image_size = 18, 0.0625, 32
config.simclr.proj_hidden_dim = 64
out = {}
for topo in ("v5e:2x2", "v5e:2x4"):
  chips = 4 if topo == "v5e:2x2" else 8
  config.batch_size = 2 * chips
  out[topo] = aot.compile_step(config, topo)
print("RESULT" + json.dumps(out))
"""


def test_simclr_tpu_compiles_for_v5e_and_memory_grows_at_most_linearly():
  """Two AOT compiles by XLA:TPU (no TPU attached) at a fixed 2 images per chip: the per-chip
  temp memory of 8 chips is at most twice that of 4 (the all-gathered negatives grow with the
  global batch; nothing may grow faster)."""
  if not os.path.isfile(aot.LOCAL_LIBTPU):
    pytest.fail("libtpu is missing: `bash scripts/setup.sh --test` installs it in .venv/libtpu")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run(
    [sys.executable, "-c", _COMPILE], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  import json

  out = json.loads(lines[0][len("RESULT") :])
  small, large = out["v5e:2x2"], out["v5e:2x4"]
  assert (small["chips"], large["chips"]) == (4, 8)
  for r in (small, large):
    assert r["chip"] == "TPU v5e" and r["fits"]
    assert r["flops_per_chip_step"] > 0 and r["collectives"]["all-reduce"]["count"] > 0
    assert r["collectives"]["all-gather"]["count"] > 0  # NT-Xent gathers the negatives
  assert large["memory_mib"]["temp_mb"] <= 2 * small["memory_mib"]["temp_mb"]

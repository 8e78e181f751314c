"""For the timm / ONNX export tests: non-trivial weights, a run directory without training, and
subprocesses that run the exported files with torch or onnxruntime and without jax or sslax."""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

import sslax
from sslax import checkpoint
from sslax import workdir as workdir_lib

# Imports the exported files must not need, blocked in the subprocess that runs them (and
# checked again at its end through sys.modules).
_BLOCKER = textwrap.dedent("""
    import importlib.machinery
    import sys

    BLOCKED = set(sys.argv[1].split(","))

    class _Blocker:
      # A spec without an origin, whose loader fails: `import x` raises ImportError, while a
      # probe with importlib.util.find_spec (torch._dynamo probes many libraries) sees no file.
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          return importlib.machinery.ModuleSpec(name, self)
        return None

      def create_module(self, spec):
        raise ImportError(f"{spec.name} is blocked: the exported encoder must not need it")

      def exec_module(self, module):
        pass

    sys.meta_path.insert(0, _Blocker())

    def assert_not_imported():
      loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
      assert not loaded, f"imported {loaded}"
    """)

NO_JAX = ("jax", "jaxlib", "flax", "sslax", "orbax", "optax", "tensorflow")


def random_variables(backbone, image_size: int, channels: int = 3, seed: int = 0) -> dict:
  """Variables of `backbone` for `image_size` inputs, drawn in NumPy (shapes from
  jax.eval_shape: no init is compiled). Kernels ~ N(0, 1 / fan_in); every tensor an init leaves
  constant (norm scales and biases, BatchNorm statistics, biases) gets non-trivial values."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(
    lambda: backbone.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, channels)), train=False
    )
  )

  def draw(path, leaf):
    names = [getattr(k, "key", "") for k in path]
    shape, name = leaf.shape, names[-1]
    if name == "kernel":
      fan_in = np.prod(shape[:-1])
      if names[-2] in ("query", "key", "value"):  # DenseGeneral [D, heads, head_dim]
        fan_in = shape[-3]
      return rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape).astype(np.float32)
    if name == "var":
      return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if name == "mean":
      return rng.normal(0.0, 0.2, shape).astype(np.float32)
    if name == "scale":
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == "bias":
      return rng.normal(0.0, 0.1, shape).astype(np.float32)
    return rng.normal(0.0, 0.5, shape).astype(np.float32)  # position embeddings, class token

  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def fake_run(workdir: str, config, variables: dict, step: int, evaluations=()) -> str:
  """A run directory as the trainer leaves it (config.json, a checkpoint holding `variables`
  as the network's backbone, results.json with `evaluations`), made without training."""
  workdir_lib.write_config(workdir, config)
  state = {"params": {"backbone": variables["params"]}}
  if "batch_stats" in variables:
    state["batch_stats"] = {"backbone": variables["batch_stats"]}
  manager = checkpoint.make_manager(workdir, save_every_steps=1, max_to_keep=1, use_async=False)
  checkpoint.save(manager, step, state, force=True)
  manager.wait_until_finished()
  manager.close()
  for record in evaluations:
    workdir_lib.append_record(workdir, record)
  return workdir


def torchvision_stub_path(tmp_path) -> str:
  """A folder to put first on PYTHONPATH: `torchvision` as sslax/_torchvision_stub.py.

  timm imports torchvision when it is imported; PyPI's torchvision wheels do not import beside
  the CPU torch wheel the test extra installs here ("operator torchvision::nms does not
  exist"), and timm's models need nothing from it, so the subprocesses that load timm get this
  stand-in (the exact names timm imports, placeholders that raise on use) in its place."""
  folder = os.path.join(str(tmp_path), "torchvision_stub")
  os.makedirs(os.path.join(folder, "torchvision"), exist_ok=True)
  stub = os.path.join(os.path.dirname(sslax.__file__), "_torchvision_stub.py")
  shutil.copy(stub, os.path.join(folder, "torchvision", "__init__.py"))
  return folder


def run_isolated(script: str, blocked, *args, pythonpath: str | None = None, timeout=300):
  """Runs `script` (after the import blocker) in a fresh interpreter; returns its stdout."""
  env = dict(os.environ)
  if pythonpath:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
  r = subprocess.run(
    [sys.executable, "-c", _BLOCKER + textwrap.dedent(script), ",".join(blocked), *map(str, args)],
    capture_output=True,
    text=True,
    timeout=timeout,
    env=env,
    check=False,
  )
  assert r.returncode == 0, r.stderr[-4000:]
  return r.stdout

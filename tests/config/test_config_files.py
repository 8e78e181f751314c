"""Every file in configs/: a preset + a few lines, loads, validates, holds only its method."""

import ast
import glob
import importlib.util
import inspect
import json
import os
import subprocess
import sys

import pytest

from sslax import config as config_lib
from sslax.methods import METHODS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))


def _module(name):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _variants(name):
  """(arg, config) for get_config() and, where it takes a method (`:siglip`), each method."""
  module = _module(name)
  yield None, module.get_config()
  if "method" in inspect.signature(module.get_config).parameters:
    yield "siglip", module.get_config("siglip")


def _code_lines(name) -> list[str]:
  """The lines after the module docstring that are neither blank nor comments."""
  source = open(os.path.join(REPO, "configs", f"{name}.py")).read()
  docstring = ast.parse(source).body[0]
  assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
  rest = source.splitlines()[docstring.end_lineno :]
  return [line for line in rest if line.strip() and not line.strip().startswith("#")]


def test_there_are_configs():
  assert len(NAMES) >= 30 and "simclr_fashion_mnist" in NAMES and "simclr_tpu" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_config_validates_and_holds_only_its_methods_section(name):
  for arg, config in _variants(name):
    config_lib.validate(config)
    sections = [key for key in config.keys() if key in METHODS]
    assert sections == [config.method], (name, arg, sections)
    if arg is not None:
      assert config.method == arg


@pytest.mark.parametrize("name", NAMES)
def test_config_is_a_preset_plus_its_own_lines(name):
  """One way to write a config: the docstring, a preset of sslax.presets, the lines that differ."""
  source = open(os.path.join(REPO, "configs", f"{name}.py")).read()
  assert ast.get_docstring(ast.parse(source)), f"{name}: the docstring (command, runtime, accuracy)"
  assert "from sslax.presets import " in source, name
  assert "base_config" not in source and "importlib" not in source, name


@pytest.mark.parametrize("name", ["simclr_fashion_mnist", "simclr_tpu"])
def test_demo_and_tpu_recipes_are_short(name):
  lines = _code_lines(name)
  assert len(lines) <= 15, "\n".join(lines)


def test_siglip_clipart_is_clip_clipart_with_the_sigmoid_loss_chunked():
  expected = _module("clip_clipart").get_config("siglip")
  expected.siglip.chunked_loss = True
  got = _module("siglip_clipart").get_config()
  assert json.dumps(got.to_dict(), sort_keys=True) == json.dumps(expected.to_dict(), sort_keys=True)


def test_other_methods_key_in_a_config_file_names_the_run_method(tmp_path):
  path = tmp_path / "simclr_with_a_byol_line.py"
  path.write_text(
    "from sslax.presets import fashion_mnist_cpu\n\n\n"
    "def get_config():\n"
    '  config = fashion_mnist_cpu("simclr")\n'
    "  config.byol.base_momentum = 0.99\n"
    "  return config\n"
  )
  spec = importlib.util.spec_from_file_location("bad_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(
    AttributeError, match="config.byol is not part of this run: config.method is 'simclr'"
  ):
    module.get_config()


def test_cli_other_methods_override_names_the_run_method(tmp_path):
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "sslax.main",
      "--config",
      "configs/simclr_fashion_mnist.py",
      "--workdir",
      str(tmp_path / "run"),
      "--config.byol.base_momentum=0.9",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 2, done.stderr[-2000:]
  assert (
    "--config.byol.base_momentum: config.byol is not part of this run: "
    "config.method is 'simclr'" in done.stderr
  )
  assert "set_method(config, 'byol')" in done.stderr and "configs/byol_*.py" in done.stderr
  assert not os.path.exists(tmp_path / "run")  # nothing was started


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_its_method_and_network_without_data(name, devices):
  """The method and its network build from the config alone (shapes only: nothing allocated,
  nothing read), at the config's own image size."""
  import jax
  import jax.numpy as jnp

  from sslax import setup as setup_lib
  from sslax import sharding

  for _, config in _variants(name):
    with config.unlocked():
      if not setup_lib.declares_data(config):  # the CPU recipes read their data's facts
        config.dataset.train_size = 10 * config.batch_size
        config.dataset.channels = 3
    method = setup_lib.build_method(
      config, sharding.make_mesh({"data": -1}, devices[:1]), data_free=True
    )
    assert method.run.total_steps > 0 and method.views()
    size, channels = method.run.image_size, method.run.channels
    inputs = jax.eval_shape(lambda: method.init_inputs(size, channels))
    shapes = jax.eval_shape(
      lambda *x: method.network().init(jax.random.key(0), *x, train=False),
      *[jnp.zeros(a.shape, a.dtype) for a in inputs],
    )
    assert jax.tree.leaves(shapes["params"])

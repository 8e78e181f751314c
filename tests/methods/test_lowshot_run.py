"""Low-shot fine-tuning (configs/lowshot.py:DIR): linear_eval with the backbone and its BatchNorm
trained and a zero-initialised head; as a trainer run on the class-balanced subset only; from the
CLI it ends with the classifier's score."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslax import checkpoint, config as config_lib, presets, sharding, train
from sslax import setup as setup_lib
from sslax import workdir as workdir_lib
from sslax.data import sources
from testkit.evaluation import fresh_copy, trained_workdir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a short run on the tiny pretrained workdir (fake data, 64 images, 10 classes) overrides.
OVERRIDES = [
  "batch_size=16",
  "total_steps=4",
  "log_every_steps=2",
  "checkpoint_every_steps=100",
  "linear_eval.num_classes=10",
]


def _lowshot_config(arg: str):
  """configs/lowshot.py's get_config(arg), as `--config configs/lowshot.py:ARG` loads it."""
  spec = importlib.util.spec_from_file_location("lowshot", os.path.join(REPO, "configs/lowshot.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture
def pretrained(tmp_path_factory, tmp_path):
  return fresh_copy(trained_workdir(tmp_path_factory), tmp_path, "pretrained")


def _method(finetune: bool, devices):
  """linear_eval on a tiny ResNet, built from the config alone (no run is read)."""
  c = presets.lowshot(None)
  c.linear_eval.finetune = finetune
  c.dataset.name, c.dataset.image_size, c.dataset.channels = "fake", 16, 3
  c.dataset.num_train_examples, c.batch_size = 64, 16
  c.model.depth, c.model.width = 10, 0.125
  c.linear_eval.num_classes = 10
  return setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]), data_free=True)


@pytest.mark.parametrize("finetune", [True, False])
def test_finetune_trains_backbone_and_batchnorm_while_linear_eval_freezes_them(finetune, devices):
  method = _method(finetune, devices)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  batch = {"views": (images,), "label": rng.integers(0, 10, 8).astype(np.int32)}
  variables = method.network().init(jax.random.key(0), images, train=False)
  params, stats = variables["params"], variables["batch_stats"]
  # Fine-tuning starts from a zero head (SimCLR's zero_init_logits_layer); linear eval does not.
  assert (np.abs(params["head"]["kernel"]).max() == 0) == finetune
  params = {**params, "head": jax.tree.map(jnp.ones_like, params["head"])}
  loss = jax.jit(lambda p: method.loss(p, stats, {}, batch, jax.random.key(1)))
  (_, (_, new_stats, _)), grads = jax.value_and_grad(loss, has_aux=True)(params)
  backbone_grad = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads["backbone"]))
  stats_moved = any(
    np.abs(np.asarray(a) - np.asarray(b)).max() > 0
    for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(stats))
  )
  assert (backbone_grad > 0) == finetune and stats_moved == finetune
  # The optimizer: every parameter updated when fine-tuning, the backbone frozen otherwise.
  tx = method.wrap_optimizer(optax.sgd(1.0))
  updates, _ = tx.update(grads, tx.init(params), params)
  backbone_update = max(float(np.abs(u).max()) for u in jax.tree.leaves(updates["backbone"]))
  assert (backbone_update > 0) == finetune


@pytest.mark.slow  # a trainer run (compile + steps: ~30 s on 2 loaded cores)
def test_subset_finetune_trains_backbone_and_head_on_the_subset_only(
  pretrained, tmp_path, devices, capsys
):
  # The end-of-run classifier score is the linear protocol's (tests/methods/test_linear_eval.py).
  config = config_lib.apply_overrides(
    _lowshot_config(f"{pretrained},0.5"), OVERRIDES + ["eval.at_end=false"]
  )
  assert config.linear_eval.finetune and config.dataset.subset_fraction == 0.5
  workdir = str(tmp_path / "lowshot")
  out = train.train(config, workdir)
  # The stream draws only the subset's examples: the subset source is what training reads.
  pre = workdir_lib.load_config(pretrained)
  whole = sources.load_source(pre, "train", pre.dataset.num_train_examples)  # what it trained on
  ids = sources.subsets.class_balanced_subset(whole.labels, 0.5, num_classes=10, seed=0)
  assert out["status"] == "done" and out["setup"].run.num_train_examples == len(ids)
  assert f"training subset: {len(ids)} of 64 examples" in capsys.readouterr().out
  subset = out["setup"].train_source
  np.testing.assert_array_equal(subset.images, whole.images[ids])
  # Backbone and its BatchNorm statistics moved from the pretrained ones; the head from zero.
  tree, _ = checkpoint.load_numpy(pretrained)
  params = jax.device_get(out["state"].params)
  moved = jax.tree.leaves(
    jax.tree.map(
      lambda a, b: np.abs(np.asarray(a) - b).max(), params["backbone"], tree["params"]["backbone"]
    )
  )
  assert max(moved) > 0
  stats = jax.device_get(out["state"].batch_stats["backbone"])
  assert any(
    np.abs(np.asarray(a) - b).max() > 0
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(tree["batch_stats"]["backbone"]))
  )
  init = out["setup"].init_fn(jax.random.key(0)).params["head"]["kernel"]
  assert not np.any(np.asarray(init)) and np.abs(params["head"]["kernel"]).max() > 0
  losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert all(np.isfinite(losses))
  saved = workdir_lib.load_config(workdir)
  assert saved.dataset.subset_fraction == 0.5 and saved.linear_eval.finetune


@pytest.mark.slow  # a subprocess: imports and compiles from scratch (~1 min on 2 loaded cores)
def test_lowshot_from_the_command_line(pretrained, tmp_path):
  names = tmp_path / "subset.json"  # the format the lowshot protocol writes
  names.write_text(json.dumps({"ids": list(range(0, 64, 2)), "num_train_examples": 64}))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run(
    [sys.executable, "-m", "sslax.main", "--config", f"configs/lowshot.py:{pretrained},{names}"]
    + ["--workdir", str(tmp_path / "run")]
    + [f"--config.{o}" for o in OVERRIDES],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"training subset: 32 of 64 examples, {names}" in done.stdout
  assert "top-1" in done.stdout

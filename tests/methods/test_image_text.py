"""The CLIP/SigLIP train step on 8 devices == 1, the tokenizer in the checkpoint, zero-shot and
retrieval math. Fixtures are written here (tmp_path); the image-text sources themselves are
tested in tests/data/test_image_text_sources.py."""

import os

import jax
import numpy as np
import pytest

from testkit import REPO
from testkit.configs import tiny_config
from testkit.image_text import write_pairs
from sslax import setup as setup_lib
from sslax import sharding
from sslax.data import sources, text
from sslax.evaluation import image_text_retrieval, zero_shot


def _tiny_image_text_config(method, data_path, chunked=False):
  c = tiny_config(method)
  c.dataset.name = "image_text_pairs"
  c.dataset.data_dir = data_path
  c.dataset.train_split = "all"
  c.dataset.test_split = "all"
  c.dataset.image_size = 8
  c.dataset.num_train_examples = 0
  c.text.width, c.text.depth, c.text.heads, c.text.context_length = 16, 1, 2, 12
  c[method].embed_dim = 8
  c[method].chunked_loss = chunked
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-3
  return c


@pytest.mark.slow  # three two-tower train-step compiles: 70-170 s each on the shared 2 cores
@pytest.mark.parametrize("method,chunked", [("clip", False), ("clip", True), ("siglip", True)])
def test_loss_and_grads_eight_devices_equal_one(tmp_path, devices, method, chunked):
  path, _ = write_pairs(str(tmp_path), n=16)
  config = _tiny_image_text_config(method, path, chunked)
  src = sources.get_source("image_text_pairs", "all", data_dir=path, image_size=8)
  m1 = setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices[:1]))
  variables = m1.network().init(jax.random.key(0), *m1.init_inputs(8, 3), train=False)
  rng = np.random.default_rng(0)
  batch = {"views": (rng.uniform(size=(16, 8, 8, 3)).astype(np.float32),), "tokens": src.tokens}
  results = []
  for devs in (devices[:1], devices):
    mesh = sharding.make_mesh({"data": -1}, devs)
    m = setup_lib.build_method(config, mesh)
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh))
    fn = jax.jit(
      jax.value_and_grad(
        lambda p, b: m.loss(p, variables["batch_stats"], {}, b, jax.random.key(1)), has_aux=True
      )
    )
    (loss, (metrics, stats, _)), grads = fn(variables["params"], jax.tree.map(put, batch))
    results.append((float(loss), jax.tree.map(np.asarray, grads), jax.tree.map(np.asarray, stats)))
  (l1, g1, s1), (l8, g8, s8) = results
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  # Whole network: BatchNorm and the loss reduce over devices in another order than on one
  # device, which the logit scale (~14) amplifies; the losses alone agree to 1e-5 (their tests).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s8, s1)
  assert np.abs(g1["log_scale"]) > 0 and np.abs(g1["text"]["token_embed"]["embedding"]).sum() > 0


@pytest.mark.slow  # trains 2 steps, then two protocols with random-init baselines
def test_train_saves_tokenizer_then_retrieval_and_zero_shot_run(tmp_path):
  from sslax import checkpoint, evaluate, train

  path, _ = write_pairs(str(tmp_path), n=32)
  config = _tiny_image_text_config("clip", path)
  config.text.context_length = 10
  config.total_steps = 2
  config.dataset.zero_shot_templates = ("{label}", "a {label}.")
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  tree, _ = checkpoint.load_numpy(workdir)
  # Restored from the checkpoint alone: the pairs file is not read.
  os.rename(path, path + ".gone")
  from sslax.methods.image_text import restore_tokenizer

  assert restore_tokenizer(tree["method_state"]) == text.ByteTokenizer(context_length=10)
  from sslax import export

  export.export(workdir, str(tmp_path / "exported"), "bundle", config=config)
  with open(tmp_path / "exported" / "tokenizer.json") as f:
    assert text.ByteTokenizer.from_json(f.read()) == text.ByteTokenizer(context_length=10)
  os.rename(path + ".gone", path)
  record = evaluate.evaluate(workdir, "image_text_retrieval", config=config)
  res = record["results"]
  for name in ("pretrained", "random_init"):
    assert res[name]["num_pairs"] == 32
    for k in (1, 5, 10):
      assert 0 <= res[name][f"image_to_text_R@{k}"] <= 1
      assert res[name][f"image_to_text_R@{k}"] <= res[name][f"image_to_text_R@{min(10, k * 5)}"]
  record = evaluate.evaluate(workdir, "zero_shot", config=config)
  assert record["results"]["pretrained"]["num_classes"] == 3
  assert record["results"]["pretrained"]["chance_top1"] == pytest.approx(1 / 3)


def test_zero_shot_prompt_ensemble_and_accuracy_by_hand():
  # 2 classes x 2 templates; class 0's prompts point along x, class 1's along y.
  per_prompt = np.array([[[2.0, 0.0], [1.0, 1.0]], [[0.0, 3.0], [0.0, 1.0]]])
  ensemble = zero_shot.class_embeddings(per_prompt)
  c0 = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
  np.testing.assert_allclose(ensemble[0], c0 / np.linalg.norm(c0))
  np.testing.assert_allclose(ensemble[1], [0.0, 1.0])
  images = np.array([[1.0, 0.1], [0.1, 1.0], [1.0, 0.9], [0.0, -1.0]])
  # Cosines: image 2 is closer to class 0 (0.92 vs 0.67 * ...), image 3 to neither (class 0: 0 > -1).
  acc = zero_shot.zero_shot_accuracy(images, np.array([0, 1, 1, 1]), ensemble, ks=(1, 2))
  assert acc == {"top1": 0.5, "top2": 1.0}
  with pytest.raises(ValueError, match="needs a '{label}' placeholder"):
    zero_shot.prompts(["a"], ["a photo"])


def test_retrieval_recall_by_hand():
  sim = np.array(
    [
      [0.9, 0.1, 0.0],  # query 0: own item first
      [0.8, 0.5, 0.1],  # query 1: own item second
      [0.3, 0.2, 0.1],
    ]
  )  # query 2: own item third
  assert image_text_retrieval.recall_at_k(sim, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}
  emb = np.eye(4)
  out = image_text_retrieval.image_text_retrieval(emb, emb, ks=(1,))
  assert out["image_to_text_R@1"] == 1.0 and out["text_to_image_R@1"] == 1.0
  assert out["chance_R@1"] == 0.25


def test_clip_vitb32_tpu_config_builds_the_papers_towers(devices):
  """configs/clip_vitb32_tpu.py: ViT-B/32 image tower (768 wide) and a 12 x 512 text tower with
  context 77, joint width 512, by shapes only (nothing is allocated)."""
  import importlib.util
  from sslax import config as config_lib

  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(REPO, "configs", "clip_vitb32_tpu.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config_lib.check_unknown_keys(config)
  assert config.batch_size == 32768 and config.optimizer.b2 == 0.98
  assert config.optimizer.warmup_epochs * module.STEPS_PER_EPOCH == pytest.approx(2000)
  method = setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices[:1]))
  shapes = jax.eval_shape(
    lambda: method.network().init(jax.random.key(0), *method.init_inputs(224, 3), train=False)
  )["params"]
  assert shapes["image_proj"]["kernel"].shape == (768, 512)
  assert shapes["text_proj"]["kernel"].shape == (512, 512)
  assert shapes["text"]["pos_embed"].shape == (77, 512)
  assert sorted(k for k in shapes["text"] if k.startswith("block")) == sorted(
    f"block{i}" for i in range(12)
  )

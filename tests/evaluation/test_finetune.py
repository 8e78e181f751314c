"""Fine-tuning: layer ids and lr scales (MAE's layer-wise decay), label smoothing, and
`--protocol finetune` on ViT and ResNet checkpoints writing top-1 to results.json."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from testkit.configs import tiny_config
from sslax import evaluate, main, models, sharding
from sslax import workdir as workdir_lib
from sslax.data.sources import ArraySource
from sslax.evaluation import finetune as finetune_lib
from sslax.evaluation import protocols


def _vit(**kw):
  m = dict(
    name="vit",
    variant="custom",
    hidden_size=32,
    num_layers=3,
    num_heads=2,
    mlp_dim=0,
    patch_size=4,
    posemb="learn",
    pool="cls",
    class_token=True,
    drop_path_rate=0.0,
    remat_policy="none",
    scan=False,
  )
  m.update(kw)
  return models.make_backbone(ml_collections.ConfigDict(m))


def _classifier_params(backbone, channels=3, fc_norm=False):
  variables = backbone.init(jax.random.key(0), jnp.zeros((1, 16, 16, channels)), train=False)
  dim = 32 if hasattr(backbone, "patch_size") else 64
  params = {
    "backbone": variables["params"],
    "head": {"kernel": jnp.zeros((dim, 10)), "bias": jnp.zeros((10,))},
  }
  if fc_norm:
    params["fc_norm"] = {"scale": jnp.ones((dim,)), "bias": jnp.zeros((dim,))}
  return params


def _flat(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_vit_layer_ids_follow_mae():
  params = _classifier_params(_vit(), fc_norm=True)
  ids, num_layers = finetune_lib.layer_ids(params)
  assert num_layers == 4  # 3 blocks + 1
  flat = _flat(ids)
  expected = {
    "patch_embed": 0,
    "pos_embedding": 0,
    "cls_token": 0,
    "cls_pos_embedding": 0,
    "encoder_norm": 4,
  }
  for path, layer in flat.items():
    top = path.split("']['")[1].strip("[]'") if path.startswith("['backbone']") else "head"
    if path.startswith("['fc_norm']"):  # MAE: fc_norm is not a block -> num_layers, as the head
      assert layer == 4, path
      continue
    if top in expected:
      assert layer == expected[top], path
    elif top == "encoder":
      block = int(path.split("['block")[1].split("'")[0])
      assert layer == block + 1, path
    else:
      assert top == "head" and layer == 4, path
  assert sorted(set(flat.values())) == [0, 1, 2, 3, 4]


def test_vit_scan_layer_ids_are_per_stacked_block():
  params = _classifier_params(_vit(scan=True))
  ids, num_layers = finetune_lib.layer_ids(params)
  qkv = ids["backbone"]["encoder"]["blocks"]["attn"]["query"]["kernel"]
  assert num_layers == 4 and np.asarray(qkv).reshape(-1).tolist() == [1, 2, 3]
  assert (
    np.asarray(qkv).ndim == params["backbone"]["encoder"]["blocks"]["attn"]["query"]["kernel"].ndim
  )


def test_resnet_layer_ids_are_stages():
  backbone = models.make_backbone(
    ml_collections.ConfigDict(dict(name="resnet", depth=18, width=0.125, stem="small"))
  )
  params = _classifier_params(backbone)
  ids, num_layers = finetune_lib.layer_ids(params)
  assert num_layers == 5
  for path, layer in _flat(ids).items():
    if "stem" in path:
      assert layer == 0, path
    elif "['stage" in path:
      assert layer == int(path.split("['stage")[1][0]), path  # stageN_blockM -> N
    else:
      assert path.startswith("['head']") and layer == 5, path


def test_lr_scale_per_parameter_is_exact():
  """One SGD step with layer decay 0.5: update = -lr * 0.5^(L+1-id) * grad, leaf by leaf."""
  params = _classifier_params(_vit())
  scales = finetune_lib.layer_decay_scales(params, 0.5)
  flat = _flat(scales)
  assert float(flat["['backbone']['patch_embed']['kernel']"]) == 0.5**4
  assert float(flat["['backbone']['encoder']['block0']['mlp']['fc1']['kernel']"]) == 0.5**3
  assert float(flat["['backbone']['encoder']['block2']['norm1']['scale']"]) == 0.5**1
  assert float(flat["['head']['kernel']"]) == 1.0
  assert float(flat["['backbone']['encoder_norm']['bias']"]) == 1.0
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 2.0, params)
  tx = optax.chain(optax.sgd(0.1), finetune_lib.scale_updates(scales))
  updates, _ = tx.update(grads, tx.init(params), params)
  for path, u in _flat(updates).items():
    np.testing.assert_allclose(
      np.asarray(u), -0.1 * 2.0 * np.asarray(flat[path]) * np.ones(u.shape), rtol=1e-6, err_msg=path
    )


def test_fc_norm_normalises_the_pooled_features_before_the_head():
  """Classifier(fc_norm=True): logits = LayerNorm(backbone features) @ W + b (MAE's fc_norm)."""
  backbone = _vit(pool="gap")
  model = finetune_lib.Classifier(backbone, 10, fc_norm=True)
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  params = _classifier_params(backbone, fc_norm=True)
  rng = np.random.default_rng(0)
  params["head"] = {"kernel": rng.normal(size=(32, 10)), "bias": rng.normal(size=10)}
  params["fc_norm"] = {"scale": rng.normal(size=32), "bias": rng.normal(size=32)}
  params = jax.tree.map(jnp.float32, params)
  logits = model.apply({"params": params}, x, train=False)
  f = np.asarray(backbone.apply({"params": params["backbone"]}, x, train=False), np.float64)
  normed = (f - f.mean(1, keepdims=True)) / np.sqrt(f.var(1, keepdims=True) + 1e-6)
  normed = normed * params["fc_norm"]["scale"] + params["fc_norm"]["bias"]
  expected = normed @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=2e-4, atol=2e-4)


def test_finetune_protocol_fine_tunes_random_init_too():
  """MAE's paper judges pretraining by fine-tuning next to random init, not frozen features."""
  assert protocols.get("finetune").baselines == ("random_init",)


def test_label_smoothing_matches_the_formula():
  logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
  labels = np.array([0, 1])
  for a in (0.0, 0.1, 0.3):
    targets = (1 - a) * np.eye(3)[labels] + a / 3
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(targets * logp).sum(1).mean()
    got = finetune_lib.smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), a)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  # Smoothing raises the loss of a confident correct prediction (it penalises certainty).
  confident = jnp.asarray([[10.0, 0.0, 0.0]])
  assert (
    float(finetune_lib.smoothed_cross_entropy(confident, jnp.asarray([0]), 0.1))
    > float(finetune_lib.smoothed_cross_entropy(confident, jnp.asarray([0]), 0.0)) + 0.1
  )


def _colour_source(n, seed):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 4
  base = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [128, 128, 128]], np.float32)[y]
  images = base[:, None, None, :] + rng.normal(0, 20, size=(n, 16, 16, 3))
  return ArraySource(
    images=np.clip(images, 0, 255).astype(np.uint8),
    labels=y.astype(np.int32),
    num_classes=4,
    class_names=("red", "green", "blue", "grey"),
    name="colours",
  )


def test_vit_finetune_with_mae_recipe_learns_colours(devices):
  backbone = _vit(num_layers=2)
  variables = backbone.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
  res = finetune_lib.finetune(
    backbone,
    variables,
    _colour_source(64, 0),
    _colour_source(64, 1),
    num_classes=4,
    image_size=16,
    mesh=sharding.make_mesh({"data": -1}),
    epochs=10,
    batch_size=16,
    eval_batch_size=64,
    optimizer="adamw",
    learning_rate=3e-3,
    weight_decay=0.05,
    crop_scale=(0.5, 1.0),
    layer_decay=0.75,
    label_smoothing=0.1,
    warmup_epochs=1,
    drop_path_rate=0.1,
  )
  assert res["steps"] == 40
  assert res["top1"] == 1.0, res


def _pretrain(tmp_path, config) -> str:
  workdir = str(tmp_path / "run")
  main.train_and_evaluate(config, workdir)
  return workdir


def _vit_mae_config():
  c = tiny_config("mae")
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 2, 2
  c.model.patch_size = 4
  c.model.posemb = "sincos2d"
  c.model.pool = "gap"
  c.mae.decoder_width, c.mae.decoder_depth, c.mae.decoder_heads = 16, 1, 2
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-3
  c.total_steps = 2
  return c


@pytest.mark.slow  # pretrains, fine-tunes and evaluates: ~35 s CPU time each
@pytest.mark.parametrize(
  "make_config", [_vit_mae_config, tiny_config], ids=["vit_mae", "resnet_simclr"]
)
def test_protocol_finetune_writes_top1(tmp_path, make_config, devices):
  workdir = _pretrain(tmp_path, make_config())
  overrides = [
    "eval.finetune_epochs=1",
    "eval.finetune_batch_size=32",
    "eval.finetune_layer_decay=0.75",
    "eval.finetune_label_smoothing=0.1",
    "eval.finetune_optimizer=adamw",
    "eval.finetune_lr=1e-3",
  ]
  assert (
    evaluate.main(
      ["--workdir", workdir, "--protocol", "finetune"] + [f"--config.{o}" for o in overrides]
    )
    == 0
  )
  record = workdir_lib.latest_record(workdir_lib.read_results(workdir), "finetune")
  res = record["results"]["pretrained"]
  assert sorted(record["results"]) == ["pretrained", "random_init"]
  assert 0 <= res["top1"] <= 1 and res["global_batch"] == 32
  assert res["steps"] == res["train_examples"] // 32 >= 1  # one epoch
  assert record["config"]["eval"]["finetune_layer_decay"] == 0.75


def test_bad_finetune_keys_name_the_fix(tmp_path):
  c = tiny_config()
  c.eval.finetune_layer_decay = 1.5
  with pytest.raises(ValueError, match=r"finetune_layer_decay=1.5 must be in \(0, 1\]"):
    protocols.check_eval_config(c)
  c = tiny_config()
  c.eval.finetune_label_smoothing = 1.0
  with pytest.raises(ValueError, match=r"finetune_label_smoothing=1.0 must be in \[0, 1\)"):
    protocols.check_eval_config(c)

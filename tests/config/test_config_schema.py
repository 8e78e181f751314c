"""The config schema: one method's section, set_method, the override grammar, config.json."""

import json
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from sslax import config as config_lib, presets
from sslax.methods import METHODS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "simclr_fashion_mnist.py")
NOT_THIS_RUN = "config.byol is not part of this run: config.method is 'simclr'"


def _sections(config):
  return [key for key in config.keys() if key in METHODS]


def _json(config):
  return json.dumps(config.to_dict(), sort_keys=True)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_base_config_holds_only_the_methods_section(method):
  c = config_lib.base_config(method)
  assert c.method == method and _sections(c) == [method]
  assert c[method].to_dict() == METHODS[method].default_config().to_dict()
  config_lib.check_unknown_keys(c)


def test_default_method_is_simclr_and_unknown_methods_fail():
  assert config_lib.base_config().method == "simclr"
  with pytest.raises(ValueError, match="Unknown config.method 'simclrr'; choose one of"):
    config_lib.base_config("simclrr")
  with pytest.raises(ValueError, match="Unknown config.method 'simclrr'"):
    config_lib.set_method(config_lib.base_config(), "simclrr")


def test_set_method_replaces_the_section_with_defaults_and_keeps_the_rest():
  c = presets.fashion_mnist_cpu("simclr")
  c.simclr.temperature = 0.2
  c.batch_size = 64
  c.lock()
  assert config_lib.set_method(c, "byol") is c
  assert c.method == "byol" and _sections(c) == ["byol"] and c.is_locked
  assert c.byol.to_dict() == METHODS["byol"].default_config().to_dict()
  assert (c.batch_size, c.model.depth, c.optimizer.name) == (64, 10, "adamw")
  config_lib.check_unknown_keys(c)
  config_lib.set_method(c, "simclr")  # back: the section is simclr's defaults again
  assert c.simclr.temperature == METHODS["simclr"].default_config().temperature


def test_other_methods_section_fails_in_check_unknown_keys():
  c = config_lib.base_config("simclr")
  c.byol = METHODS["byol"].default_config()  # e.g. added by a config file
  with pytest.raises(ValueError, match=NOT_THIS_RUN) as err:
    config_lib.validate(c)
  assert "set_method(config, 'byol')" in str(err.value)


def test_assigning_config_method_instead_of_set_method_names_the_fix():
  c = config_lib.base_config("simclr")
  c.method = "byol"
  with pytest.raises(
    ValueError, match=r"config.method is 'byol' but the config holds config.simclr"
  ):
    config_lib.check_unknown_keys(c)
  with pytest.raises(ValueError, match=r"set_method\(config, 'byol'\)"):
    config_lib.validate(c)


def test_other_methods_key_fails_on_access_naming_the_run_method():
  c = config_lib.base_config("simclr")
  with pytest.raises(AttributeError, match=NOT_THIS_RUN):
    c.byol.base_momentum = 0.9
  with pytest.raises(AttributeError, match='Did you mean "simclr"'):  # typos: ml_collections' hint
    c.simclrr.temperature = 0.1


def test_check_override_keys_other_method_switch_and_typos():
  c = config_lib.base_config("simclr")
  config_lib.check_override_keys(c, ["--config.simclr.temperature=0.1", "--config.method=simclr"])
  with pytest.raises(ValueError, match="--config.byol.base_momentum: " + NOT_THIS_RUN):
    config_lib.check_override_keys(c, ["--config.byol.base_momentum=0.9"])
  with pytest.raises(ValueError, match="--config.method=byol: an override cannot switch"):
    config_lib.check_override_keys(c, ["--config.method=byol"])
  with pytest.raises(ValueError, match="--config.method=byol: an override cannot switch"):
    config_lib.check_override_keys(c, ["--config.method", "byol"])
  with pytest.raises(ValueError, match="Unknown config.method 'nope'"):
    config_lib.check_override_keys(c, ["--config.method=nope"])
  with pytest.raises(ValueError) as err:
    config_lib.check_override_keys(c, ["--config.optimizer.base_lrr=0.1"])
  assert "Unknown config key --config.optimizer.base_lrr" in str(err.value)
  assert "Did you mean optimizer.base_lr" in str(err.value)
  assert "simclr.temperature" in str(err.value) and "byol." not in str(err.value)


def test_apply_overrides_grammar():
  c = config_lib.base_config("simclr")
  out = config_lib.apply_overrides(
    c,
    [
      "--config.eval.knn_ks=5,50",  # a tuple, as ml_collections' flags parse it
      "eval.knn_temperature=1",  # without the prefix; an int for a float key -> 1.0
      "--config.optimizer.name=sgd",  # strings as written
      "--config.eval.baselines=false",
      "--config.async_checkpointing=1",
      "--config.augment.crop_scale=(0.2, 1.0)",
      "--config.eval.retrieval_ks=5",  # one value for a tuple key -> (5,)
      "--config.simclr.temperature=0.1",
      "--config.dataset.data_dir=/data/a b=c",  # everything after the first "=" is the value
    ],
  )
  assert out is c
  assert c.eval.knn_ks == (5, 50) and c.eval.retrieval_ks == (5,)
  assert c.eval.knn_temperature == 1.0 and isinstance(c.eval.knn_temperature, float)
  assert (c.optimizer.name, c.eval.baselines, c.async_checkpointing) == ("sgd", False, True)
  assert c.augment.crop_scale == (0.2, 1.0) and c.simclr.temperature == 0.1
  assert c.dataset.data_dir == "/data/a b=c"
  for bad, message in [
    ("eval.knn_k=5", "Unknown config key --config.eval.knn_k. Did you mean eval.knn_ks"),
    ("--config.byol.base_momentum=0.9", NOT_THIS_RUN),
    ("--config.method=byol", "an override cannot switch the method"),
    ("eval.baselines=maybe", "expected true/false"),
    ("eval.knn_ks=(5,", "cannot parse"),
    ("eval.knn_ks", "must look like key.path=value"),
  ]:
    with pytest.raises(ValueError, match=message):
      config_lib.apply_overrides(config_lib.base_config("simclr"), [bad])


def test_apply_overrides_matches_sslax_mains_flags():
  """The same strings give the same config through ml_collections' --config.* flags."""
  overrides = [
    "--config.batch_size=512",
    "--config.eval.knn_ks=5,50",
    "--config.eval.retrieval_ks=(1, 5)",
    "--config.optimizer.name=sgd",
    "--config.eval.baselines=false",
    "--config.async_checkpointing=1",
    "--config.augment.crop_scale=(0.3, 1.0)",
    "--config.optimizer.base_lr=1e-3",
    "--config.optimizer.warmup_epochs=1",
    "--config.simclr.temperature=0.3",
    "--config.dataset.data_dir=/tmp/x y",
  ]
  argv = ["prog", f"--config={DEMO}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  spec = config_flags.config_flags._LoadConfigModule("demo", DEMO)
  assert _json(config_lib.apply_overrides(spec.get_config(), overrides)) == _json(
    flag_values.config
  )


def test_config_from_dict_round_trip_and_new_style_json():
  c = presets.fashion_mnist_cpu("dino")
  c.dino.out_dim = 1024
  c.mesh = ml_collections.ConfigDict({"data": 2, "fsdp": 4})
  values = json.loads(c.to_json_best_effort())
  values["sslax_version"] = "0.1"  # written by sslax/workdir.py beside the config
  got = config_lib.config_from_dict(values)
  assert _json(got) == _json(c) and _sections(got) == ["dino"]
  config_lib.validate(got)


def test_config_from_dict_old_run_dir_with_every_methods_section():
  """config.json of runs before one-section configs: 18 sections; keep the run's, drop the rest."""
  want = presets.fashion_mnist_cpu("byol")
  want.byol.base_momentum = 0.99
  values = json.loads(want.to_json_best_effort())
  for name, cls in METHODS.items():  # as the old base_config() wrote them
    if name != "byol":
      values[name] = json.loads(cls.default_config().to_json_best_effort())
  values["simclr"]["temperature"] = 0.2
  values["optimizer"]["an_old_removed_key"] = 1.0  # keys this version does not know
  values["old_top_level"] = {"a": 1}
  got = config_lib.config_from_dict(values)
  assert _sections(got) == ["byol"] and got.byol.base_momentum == 0.99
  assert _json(got) == _json(want)
  config_lib.validate(got)
  assert "an_old_removed_key" not in got.optimizer and "old_top_level" not in got


def test_config_from_dict_unknown_method_fails():
  with pytest.raises(ValueError, match="method 'not_a_method' is not known"):
    config_lib.config_from_dict({"method": "not_a_method"})

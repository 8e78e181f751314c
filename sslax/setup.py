"""config -> everything a run needs before its first step, built once.

Sections: config checks, mesh, training source and RunInfo, method, optimizer, model init
(shapes first, via jax.eval_shape) and the state's shardings. The trainer (`sslax.train`), the
CLIs' evaluation (`sslax.evaluate`) and compile-only checks (`build(..., data_free=True)`:
RunInfo from the config alone, nothing read from disk) all start here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import config as config_lib, online_probe, optim, sharding
from sslax.data import pipeline, sources
from sslax.methods import get_method
from sslax.methods.base import EpochContext, Method
from sslax.run_info import RunInfo
from sslax.state import TrainState


@dataclasses.dataclass
class Setup:
  """Everything built from a config before the first step."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  run: RunInfo
  method: Method
  train_source: object  # None when built data-free
  tx: optax.GradientTransformation
  init_fn: Callable  # rng -> TrainState
  abstract_state: object  # ShapeDtypeStructs with shardings
  state_sharding: object
  probe: online_probe.OnlineProbe | None = None  # the online linear probe; None: off

  def epoch_context(self) -> EpochContext:
    return EpochContext(
      train_source=self.train_source, mesh=self.mesh, state_sharding=self.state_sharding
    )


def make_run_info(config: ml_collections.ConfigDict, *, data_free: bool = False):
  """-> (RunInfo, training source or None). data_free: from the config's declarations alone.

  A method that trains on part of the split (`Method.training_subset`) gets a source and a
  RunInfo of that part only."""
  subset = get_method(config.method).training_subset
  if data_free:
    run = RunInfo.from_config(config)
    indices = subset(config, run.num_train_examples)
    if indices is not None:
      run = RunInfo.from_config(config, num_train_examples=len(indices))
    return run, None
  source = sources.load_source(
    config, config.dataset.train_split, config.dataset.num_train_examples
  )
  indices = subset(config, pipeline.num_examples(source))
  if indices is not None:
    source = sources.base.take_indices(source, indices)
  run = RunInfo.from_config(
    config,
    num_train_examples=pipeline.num_examples(source),
    channels=sources.image_channels(source),
  )
  return run, source


def declares_data(config: ml_collections.ConfigDict) -> bool:
  """Whether the config declares the facts a data-free RunInfo needs (the pod presets do)."""
  d = config.dataset
  return (d.num_train_examples > 0 or d.train_size > 0) and d.channels > 0


def build_method(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, data_free: bool | None = None
) -> Method:
  """The configured method alone (no optimizer, no state): for tests, notebooks, compile checks.

  data_free: None = without data when the config declares its size and channels."""
  config_lib.validate(config)
  if data_free is None:
    data_free = declares_data(config)
  run, _ = make_run_info(config, data_free=data_free)
  return get_method(config.method)(config, run, mesh)


def build(config: ml_collections.ConfigDict, devices=None, *, data_free: bool = False) -> Setup:
  """devices: the devices to build the mesh over (default: all of them).

  data_free: no training source is opened; the config must declare
  `dataset.num_train_examples` and `dataset.channels` (see `RunInfo.from_config`).
  """
  # ---- Config checks and mesh: fail before any data is read or anything compiled.
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh, name="eval.batch_size")

  # ---- Training source (the pipeline itself is built at the resume step, in `train`) and the
  # run's facts, computed once and handed to the method.
  run, train_source = make_run_info(config, data_free=data_free)
  method = get_method(config.method)(config, run, mesh)
  tx = method.wrap_optimizer(optim.make_optimizer(config.optimizer, run.lr_schedule))

  # ---- Model init: shapes first, then the real init straight into its sharding.
  network = method.network()
  # The online linear probe (labels from the source, width from the backbone), or None.
  probe = online_probe.make(
    config, method, run, train_source, lambda: _backbone_width(network, run)
  )

  def init_fn(rng):
    variables = network.init(rng, *method.init_inputs(run.image_size, run.channels), train=False)
    variables = method.initial_variables(variables)
    params = variables["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      method_state=method.init_state(rng, variables),
      rng=jax.random.key_data(rng),
      probe={} if probe is None else probe.init(),
    )

  shapes = jax.eval_shape(init_fn, jax.random.key(config.seed))
  # FSDP: large params and their optimizer state split over mesh "fsdp"; the rest replicated.
  state_sharding = sharding.state_sharding(shapes, mesh, config.model.fsdp_min_size)
  abstract_state = jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, state_sharding
  )
  return Setup(
    config, mesh, run, method, train_source, tx, init_fn, abstract_state, state_sharding, probe
  )


def _backbone_width(network, run: RunInfo) -> int:
  """F of the backbone's [B, F] output on the run's images (shapes only, nothing computed)."""
  x = jax.ShapeDtypeStruct((1, run.image_size, run.image_size, run.channels), jnp.float32)
  out = jax.eval_shape(
    lambda x: network.backbone.init_with_output(jax.random.key(0), x, train=False)[0], x
  )
  return int(out.shape[-1])


def init_state(s: Setup) -> TrainState:
  """The run's initial state (seeded by config.seed), placed in its sharding."""
  return jax.jit(s.init_fn, out_shardings=s.state_sharding)(jax.random.key(s.config.seed))


def init_probe_state(s: Setup):
  """The online probe's initial state alone, placed in its sharding ({} when the probe is off):
  for a resumed checkpoint written without one."""
  if s.probe is None:
    return {}
  return jax.jit(s.probe.init, out_shardings=s.state_sharding.probe)()

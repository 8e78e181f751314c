"""DeepCluster (Caron et al. 2018, "Deep Clustering for Unsupervised Learning of Visual
Features"): alternate k-means on the features and classification of the cluster ids.

Each epoch, before its first step (`before_epoch`, on the host):
  1. embed the whole training set with the current backbone (eval mode, centre crops),
  2. PCA to `pca_dims`, whitening, L2 normalisation, k-means with `num_clusters`
     (`sslax.pretext.kmeans`: sharded over the mesh, empty clusters re-seeded from a
     perturbed large cluster as in the paper),
  3. store the assignments as pseudo-labels [N] int32 in the method state (looked up by the
     global example index `batch["index"]` the pipeline puts in every batch),
  4. re-initialise the classifier (the paper's top layer) and its momentum (first-moment)
     optimizer state; second-moment (Adam) state is kept so that the first steps of the new
     classifier are not oversized by a fresh bias correction.
The classifier is a linear layer on the backbone's pooled features (the features that are
clustered and that evaluation uses).

Uniform sampling over pseudo-classes: our input order is a stateless function of
(seed, step), so instead of the paper's sampler every example's cross entropy is weighted by
N / (K' n_c) (n_c: its cluster's size, K': non-empty clusters). The weighted batch mean has
the same expectation as the loss under uniform sampling over clusters then over members.

A resumed run does not re-cluster for the epoch in progress: the pseudo-labels of that epoch
are in the checkpoint (`clustered_epoch`), so it continues exactly.

Metrics: `pretext_accuracy` (the classifier's accuracy on the pseudo-labels of the batch),
`pretext_chance` (the largest cluster's share of the data: the best constant prediction),
`cluster_nmi` (NMI between this epoch's assignment and the previous one; 0 in the first),
`empty_clusters` (clusters still empty after k-means).

Left out: the paper's fixed Sobel filter in front of the network (it removes colour, which
Fashion-MNIST has none of) and its MLP (fc6/fc7) between backbone and classifier.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslax.data import sources
from sslax.data.augment import ViewSpec
from sslax.features import extract_features
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import get_dtype, make_backbone
from sslax.pretext import kmeans

# Optimizer-state fields that hold a first moment (momentum): reset with the classifier.
FIRST_MOMENT_FIELDS = ("mu", "trace")


class DeepClusterNetwork(nn.Module):
  """images [B, S, S, C] -> (features [B, D], cluster logits [B, K])."""

  backbone: nn.Module
  num_clusters: int
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    features = self.backbone(x, train=train)
    logits = nn.Dense(self.num_clusters, dtype=self.dtype, name="classifier")(features)
    return features, logits.astype(jnp.float32)


def weighted_cross_entropy(
  logits: jax.Array, labels: jax.Array, class_weights: jax.Array
) -> tuple[jax.Array, dict]:
  """logits [B, K], labels [B] int, class_weights [K] -> (mean_b w[y_b] CE_b, metrics)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  loss = jnp.mean(class_weights[labels] * ce)
  return loss, {
    "pretext_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    "unweighted_ce": jnp.mean(ce),
  }


def uniform_cluster_weights(counts: jax.Array) -> jax.Array:
  """Cluster sizes [K] -> per-example weights [K]: N / (K' n_c), 0 for empty clusters."""
  counts = jnp.asarray(counts, jnp.float32)
  nonempty = jnp.sum(counts > 0)
  return jnp.where(counts > 0, jnp.sum(counts) / (nonempty * jnp.maximum(counts, 1.0)), 0.0)


def reset_first_moments(opt_state, subtree: str):
  """Zeros the momentum-like leaves (FIRST_MOMENT_FIELDS) of `opt_state` under params[subtree]."""

  def reset(path, leaf):
    names = [getattr(p, "name", None) for p in path]
    keys = [getattr(p, "key", None) for p in path]
    if subtree in keys and any(n in FIRST_MOMENT_FIELDS for n in names):
      return jnp.zeros_like(leaf)
    return leaf

  return jax.tree_util.tree_map_with_path(reset, opt_state)


class DeepCluster(Method):
  name = "deepcluster"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        num_clusters=10000,  # paper (ImageNet): 10k, over-segmentation helps
        pca_dims=256,  # paper: 256, whitened, then L2-normalised
        kmeans_iters=20,
        uniform_sampling=True,  # weight examples by 1 / cluster size (see module doc)
        reset_classifier=True,  # paper: the top layer is re-initialised every epoch
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.deepcluster
    if cfg.num_clusters < 2 or cfg.pca_dims < 1 or cfg.kmeans_iters < 1:
      raise ValueError(
        f"config.deepcluster: num_clusters={cfg.num_clusters} must be >= 2, "
        f"pca_dims={cfg.pca_dims} and kmeans_iters={cfg.kmeans_iters} >= 1."
      )
    self.num_examples = run.num_train_examples
    if cfg.num_clusters > self.num_examples:
      raise ValueError(
        f"config.deepcluster.num_clusters={cfg.num_clusters} is more than the "
        f"{self.num_examples} training examples; lower it."
      )

  def views(self):
    return (ViewSpec.from_config(self.config.augment, self.run.image_size),)

  def network(self):
    return DeepClusterNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      num_clusters=self.config.deepcluster.num_clusters,
      dtype=get_dtype(self.config.dtype),
    )

  def init_state(self, rng, variables):
    k = self.config.deepcluster.num_clusters
    return {
      "pseudo_labels": jnp.zeros((self.num_examples,), jnp.int32),
      "class_weights": jnp.ones((k,), jnp.float32),
      "largest_cluster": jnp.ones((), jnp.float32),
      "cluster_nmi": jnp.zeros((), jnp.float32),
      "empty_clusters": jnp.zeros((), jnp.int32),
      "clustered_epoch": jnp.full((), -1, jnp.int32),
    }

  def loss(self, params, batch_stats, method_state, batch, rng):
    (features, logits), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      batch["views"][0],
      train=True,
      mutable=["batch_stats"],
    )
    labels = method_state["pseudo_labels"][batch["index"]]
    weights = method_state["class_weights"]
    if not self.config.deepcluster.uniform_sampling:
      weights = jnp.ones_like(weights)
    loss, metrics = weighted_cross_entropy(logits, labels, weights)
    metrics = dict(
      metrics,
      pretext_chance=method_state["largest_cluster"],
      cluster_nmi=method_state["cluster_nmi"],
      empty_clusters=method_state["empty_clusters"].astype(jnp.float32),
      **{PROBE_FEATURES: features},
    )
    return loss, (metrics, updates["batch_stats"], method_state)

  # ---- The clustering step, once per epoch, on the host.

  def cluster(self, params, batch_stats, source, epoch: int) -> dict:
    """Features of `source` -> PCA/whitening/L2 -> k-means; a dict as `kmeans.kmeans`."""
    cfg = self.config.deepcluster
    variables = {"params": params["backbone"]}
    if "backbone" in batch_stats:
      variables["batch_stats"] = batch_stats["backbone"]
    feats, _ = extract_features(
      self.network().backbone,
      variables,
      source,
      image_size=self.config.dataset.image_size,
      batch_size=self.config.eval.batch_size,
      mesh=self.mesh,
      crop_fraction=self.config.eval.crop_fraction,
      normalize=self.config.augment.normalize,
    )
    x, valid = kmeans.put_rows(feats, self.mesh)
    z = kmeans.pca_whiten(x, valid, dims=min(cfg.pca_dims, feats.shape[1]))
    key = jax.random.fold_in(jax.random.key(self.config.seed), epoch)
    return kmeans.kmeans(
      z, valid, cfg.num_clusters, key, mesh=self.mesh, num_iters=cfg.kmeans_iters
    )

  def before_epoch(self, state, epoch, ctx):
    cfg, ms = self.config.deepcluster, state.method_state
    if isinstance(ctx.train_source, sources.TFDSSource):
      raise ValueError(
        f"deepcluster needs a random-access dataset (pseudo-labels are looked up by example "
        f"index), but {self.config.dataset.name!r} is streamed from TFDS. Use a dataset that "
        "fits in memory, an image_folder, or a smaller split."
      )
    previous_epoch = int(jax.device_get(ms["clustered_epoch"]))
    if previous_epoch == epoch:  # resumed mid-epoch: this epoch's labels are in the checkpoint
      return state
    out = self.cluster(state.params, state.batch_stats, ctx.train_source, epoch)
    labels = out["assignments"][: self.num_examples]
    counts = out["counts"]
    host_labels = np.asarray(jax.device_get(labels))
    nmi = (
      kmeans.normalized_mutual_information(
        host_labels, np.asarray(jax.device_get(ms["pseudo_labels"]))
      )
      if previous_epoch >= 0
      else 0.0
    )
    empty = int(jnp.sum(counts == 0))
    new_ms = dict(
      ms,
      pseudo_labels=labels,
      class_weights=uniform_cluster_weights(counts),
      largest_cluster=jnp.max(counts) / self.num_examples,
      cluster_nmi=jnp.asarray(nmi, jnp.float32),
      empty_clusters=jnp.asarray(empty, jnp.int32),
      clustered_epoch=jnp.asarray(epoch, jnp.int32),
    )
    params, opt_state = state.params, state.opt_state
    if cfg.reset_classifier:
      key = jax.random.fold_in(jax.random.key(self.config.seed + 1), epoch)
      fresh = self.network().init(
        key, *self.init_inputs(self.run.image_size, self.run.channels), train=False
      )
      params = dict(params, classifier=fresh["params"]["classifier"])
      opt_state = reset_first_moments(opt_state, "classifier")
    if jax.process_index() == 0:
      print(
        f"deepcluster: epoch {epoch}: k-means on {self.num_examples} examples, "
        f"inertia {float(out['inertia']):.4f}, largest cluster {float(jnp.max(counts))}, "
        f"{empty} empty, {int(out['reseeded'])} re-seeded; NMI with previous {nmi:.3f}",
        flush=True,
      )
    new = state.replace(params=params, opt_state=opt_state, method_state=new_ms)
    return jax.device_put(new, ctx.state_sharding)

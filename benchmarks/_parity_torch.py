r"""The PyTorch side of benchmarks/parity.py: one (method, seed) run, trained and featurised.

  <torch venv>/bin/python benchmarks/_parity_torch.py --method simclr --seed 0 \
    --recipe /tmp/sslax_parity/recipes/simclr.json --data /tmp/sslax_parity/fashion_mnist.npz \
    --out /tmp/sslax_parity/torch/simclr_seed0

Runs with torch (CPU) and lightly's loss and head modules, never with sslax: parity.py (in
sslax's environment) writes the recipe (the effective sslax config of the method, as JSON) and
the Fashion-MNIST arrays (.npz, read without pickle), starts this script with the torch venv's
python, and evaluates the features it writes with sslax's own kNN. Writes to --out:
features.npz (bank: backbone features of the first --eval_train training images; test: of the
test split; labels of both) and result.json (step times, the last losses, settings).

Everything that defines the recipe is written here independently of sslax, to the parameters
the recipe JSON holds: the ResNet, the augmentation, the optimizer and its schedule, the
EMA and freeze schedules. The differences from sslax that remain are listed in
benchmarks/parity.py's docstring.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import sys
import time
from typing import ClassVar

import numpy as np

# Before torch's OpenMP starts: threads that sleep at barriers instead of spinning (parity.py
# sets it too); spinning threads are several times slower on a machine shared with other jobs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _import_lightly():
  """lightly.loss imports torchvision.ops.roi_align at import time; PyPI's torchvision does not
  import beside the CPU torch wheel, so sslax's torchvision stand-in (whose every name is a
  placeholder that raises on use) is loaded as `torchvision` when the real one fails."""
  try:
    import torchvision  # noqa: F401
  except (ImportError, RuntimeError, OSError):  # missing, or built for another torch build
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
    path = os.path.join(ROOT, "sslax", "_torchvision_stub.py")
    spec = importlib.util.spec_from_file_location(
      "torchvision", path, submodule_search_locations=[]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["torchvision"] = module
    spec.loader.exec_module(module)
  import lightly.loss
  import lightly.models.modules.heads
  import lightly.models.utils

  return lightly


# ---------------------------------------------------------------------------------------------
# Augmentation: batched, on [N, H, W] float32 tensors in [0, 1] (grey images, one channel).
# ---------------------------------------------------------------------------------------------

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop


def sample_boxes(rng, n, height, width, scale, ratio=(3 / 4, 4 / 3)):
  """torchvision RandomResizedCrop.get_params for n images at once -> (top, left, h, w) [n]."""
  area = height * width
  target = area * rng.uniform(scale[0], scale[1], (n, CROP_ATTEMPTS))
  aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, CROP_ATTEMPTS)))
  w = np.round(np.sqrt(target * aspect)).astype(np.int64)
  h = np.round(np.sqrt(target / aspect)).astype(np.int64)
  ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = np.argmax(ok, axis=1)
  rows = np.arange(n)
  h, w = h[rows, first], w[rows, first]
  top = (rng.random(n) * (height - h + 1)).astype(np.int64)
  left = (rng.random(n) * (width - w + 1)).astype(np.int64)
  # No attempt fits (rare at these scales): the whole (square) image, as torchvision's fallback.
  miss = ~ok.any(axis=1)
  h[miss], w[miss], top[miss], left[miss] = height, width, 0, 0
  return top, left, h, w


def _source_coords(offset, length, size):
  """Half-pixel bilinear sample positions of `size` outputs over [offset, offset + length),
  clamped inside the box (no pixel outside the crop is read) -> (i0, i1, frac) [n, size]."""
  j = torch.arange(size, dtype=torch.float32)[None, :]
  length_f = length[:, None].float()
  src = ((j + 0.5) * length_f / size - 0.5).clamp(min=0.0)
  src = torch.minimum(src, length_f - 1)
  i0 = src.floor()
  frac = src - i0
  i0 = i0.long()
  i1 = torch.minimum(i0 + 1, length[:, None] - 1)
  return i0 + offset[:, None], i1 + offset[:, None], frac


def resized_crop(images, top, left, h, w, size):
  """images [N, H, W] -> [N, size, size]: each box bilinearly resized (half-pixel centres,
  no antialiasing: F.interpolate(mode='bilinear', align_corners=False) of the crop)."""
  n, _, width = images.shape
  top, left, h, w = (torch.from_numpy(a) for a in (top, left, h, w))
  y0, y1, fy = _source_coords(top, h, size)
  x0, x1, fx = _source_coords(left, w, size)
  rows = lambda idx: torch.gather(images, 1, idx[:, :, None].expand(n, size, width))
  r = rows(y0) * (1 - fy[:, :, None]) + rows(y1) * fy[:, :, None]  # [N, size, W]
  cols = lambda idx: torch.gather(r, 2, idx[:, None, :].expand(n, size, size))
  return cols(x0) * (1 - fx[:, None, :]) + cols(x1) * fx[:, None, :]


def _coin(rng, n, prob):
  return torch.from_numpy(rng.random(n) < prob)


def color_jitter(rng, x, prob, brightness, contrast):
  """ColorJitter(brightness, contrast) on grey images w.p. prob, the two ops in random order,
  clipped to [0, 1] after each; brightness multiplies, contrast blends with the image mean."""
  n = x.shape[0]
  apply = _coin(rng, n, prob)[:, None, None]
  b = torch.from_numpy(rng.uniform(max(0.0, 1 - brightness), 1 + brightness, n)).float()
  c = torch.from_numpy(rng.uniform(max(0.0, 1 - contrast), 1 + contrast, n)).float()
  b, c = b[:, None, None], c[:, None, None]
  bright = lambda y: (y * b).clamp(0, 1)

  def contr(y):
    mean = y.mean(dim=(1, 2), keepdim=True)
    return ((y - mean) * c + mean).clamp(0, 1)

  brightness_first = torch.from_numpy(rng.random(n) < 0.5)[:, None, None]
  out = torch.where(brightness_first, contr(bright(x)), bright(contr(x)))
  return torch.where(apply, out, x)


def gaussian_blur(rng, x, prob, sigma=(0.1, 2.0)):
  """Separable Gaussian blur w.p. prob, sigma ~ U(sigma), kernel 10% of the side (odd, >= 3),
  edge pixels mirrored at the border (SYMMETRIC padding, = replicate for a 3-tap kernel)."""
  if prob <= 0:
    return x
  n, s, _ = x.shape
  k = max(s // 10, 3)
  k += 1 - k % 2
  radius = k // 2
  apply = _coin(rng, n, prob)[:, None, None]
  sig = torch.from_numpy(rng.uniform(sigma[0], sigma[1], n)).float()[:, None]
  t = torch.arange(-radius, radius + 1, dtype=torch.float32)[None, :]
  kern = torch.exp(-(t**2) / (2 * sig**2))
  kern = kern / kern.sum(dim=1, keepdim=True)  # [N, k]
  y = x[None]  # [1, N, S, S]: one group per image
  idx = torch.cat(
    [torch.arange(radius - 1, -1, -1), torch.arange(s), torch.arange(s - 1, s - 1 - radius, -1)]
  )
  y = y[:, :, :, idx]
  y = F.conv2d(y, kern[:, None, None, :], groups=n)
  y = y[:, :, idx, :]
  y = F.conv2d(y, kern[:, None, :, None], groups=n)
  return torch.where(apply, y[0], x)


def solarize(rng, x, prob, threshold=0.5):
  if prob <= 0:
    return x
  apply = _coin(rng, x.shape[0], prob)[:, None, None]
  return torch.where(apply & (x >= threshold), 1 - x, x)


def make_view(rng, images, view):
  """images [N, H, W] float in [0, 1] -> [N, 1, S, S]: crop, flip, jitter, (grayscale: a no-op
  on one channel), blur, solarize; no normalisation (augment.normalize 'none')."""
  n, height, width = images.shape
  x = resized_crop(images, *sample_boxes(rng, n, height, width, view["crop_scale"]), view["size"])
  flip = _coin(rng, n, view["flip_prob"])[:, None, None]
  x = torch.where(flip, x.flip(-1), x)
  x = color_jitter(rng, x, view["jitter_prob"], view["brightness"], view["contrast"])
  x = gaussian_blur(rng, x, view["blur_prob"])
  x = solarize(rng, x, view["solarize_prob"])
  return x[:, None]


def view_specs(recipe):
  """The method's views as dicts, from the recipe (the sslax config) alone."""
  method, aug, size = recipe["method"], recipe["augment"], recipe["image_size"]
  if aug["normalize"] != "none":
    raise ValueError(f"only augment.normalize='none' is implemented, got {aug['normalize']!r}")
  strength = aug["jitter_strength"]
  base = {
    "size": size,
    "crop_scale": tuple(aug["crop_scale"]),
    "flip_prob": aug["flip_prob"],
    "jitter_prob": aug["jitter_prob"],
    # Grey images: only brightness and contrast of the colour jitter act.
    "brightness": aug["brightness"] if aug["brightness"] is not None else 0.8 * strength,
    "contrast": aug["contrast"] if aug["contrast"] is not None else 0.8 * strength,
    "blur_prob": aug["blur_prob"],
    "solarize_prob": aug["solarize_prob"],
  }
  cfg = recipe[method]
  if method == "simclr":
    return [base, base]
  if method in ("byol", "barlow_twins"):
    return [
      dict(base, blur_prob=cfg["view_blur_prob"][i], solarize_prob=cfg["view_solarize_prob"][i])
      for i in range(2)
    ]
  if method == "swav":
    glob = dict(base, crop_scale=tuple(cfg["global_crop_scale"]))
    local = dict(base, size=cfg["local_crop_size"], crop_scale=tuple(cfg["local_crop_scale"]))
    return [glob, glob] + [local] * cfg["num_local_crops"]
  if method == "dino":
    glob = [
      dict(
        base,
        crop_scale=tuple(cfg["global_crop_scale"]),
        blur_prob=cfg["global_blur_prob"][i],
        solarize_prob=cfg["global_solarize_prob"][i],
      )
      for i in range(2)
    ]
    local = dict(
      base,
      size=cfg["local_crop_size"],
      crop_scale=tuple(cfg["local_crop_scale"]),
      blur_prob=cfg["local_blur_prob"],
      solarize_prob=0.0,
    )
    return glob + [local] * cfg["num_local_crops"]
  raise ValueError(f"no PyTorch recipe for method {method!r}")


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def lecun_normal_(weight):
  """Flax's default Dense init: truncated normal (2 std), variance 1 / fan_in."""
  fan_in = weight.shape[1]
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def init_linears_like_flax(module):
  for m in module.modules():
    if isinstance(m, nn.Linear):
      lecun_normal_(m.weight)
      if m.bias is not None:
        nn.init.zeros_(m.bias)


def bn2d(c, zero=False):
  m = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # torch momentum 0.1 == flax momentum 0.9
  if zero:
    nn.init.zeros_(m.weight)
  return m


def conv(cin, cout, k, stride=1):
  c = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)  # symmetric k // 2 padding
  nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")  # N(0, 2 / fan_out)
  return c


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1, self.bn1 = conv(cin, cout, 3, stride), bn2d(cout)
    self.conv2, self.bn2 = conv(cout, cout, 3), bn2d(cout, zero=True)  # zero-init last BN scale
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = nn.Sequential(conv(cin, cout, 1, stride), bn2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet(nn.Module):
  """ResNet (basic blocks) with a width multiplier and the small-image stem (3x3/1, no pool);
  output: globally average-pooled features [N, 512 * width]."""

  LAYOUTS: ClassVar[dict] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

  def __init__(self, depth, width, in_channels=1):
    super().__init__()
    base = max(int(64 * width), 1)
    self.stem = nn.Sequential(conv(in_channels, base, 3), bn2d(base), nn.ReLU())
    blocks, cin = [], base
    for stage, n in enumerate(self.LAYOUTS[depth]):
      for i in range(n):
        cout = base * 2**stage
        blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.dim = cin

  def forward(self, x):
    x = x.contiguous(memory_format=torch.channels_last)
    return self.blocks(self.stem(x)).mean(dim=(2, 3))


def make_backbone(recipe):
  model = recipe["model"]
  if model["name"] != "resnet" or model["stem"] != "small" or model["depth"] not in (10, 18, 34):
    raise ValueError(f"only small-stem basic-block ResNets are implemented, got {model}")
  # channels_last: oneDNN's fast path for these convs on CPU (~1.5x fewer CPU seconds per
  # forward + backward than NCHW here); the same arithmetic up to rounding.
  net = ResNet(model["depth"], model["width"], recipe["channels"])
  return net.to(memory_format=torch.channels_last)


def head_mlp(heads, dims, hidden_bias, out_bias):
  """lightly's ProjectionHead: (Linear -> BN -> ReLU) x (L-1) -> Linear, biases as given."""
  blocks = []
  for i in range(len(dims) - 2):
    blocks.append((dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), hidden_bias))
  blocks.append((dims[-2], dims[-1], None, None, out_bias))
  return heads.ProjectionHead(blocks)


# ---------------------------------------------------------------------------------------------
# Methods: (network modules, loss(views, step) -> (loss, metrics), after_step(step))
# ---------------------------------------------------------------------------------------------


def cosine_increase(start, end, step, total):
  """end - (end - start) (cos(pi k / K) + 1) / 2 (BYOL's / DINO's EMA momentum at step k)."""
  progress = min(max(step / max(total, 1), 0.0), 1.0)
  return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


class SimCLR:
  def __init__(self, recipe, lightly):
    cfg = recipe["simclr"]
    self.backbone = make_backbone(recipe)
    # lightly's SimCLRProjectionHead: Linear(no bias)-BN-ReLU-Linear(no bias)-BN; the last BN's
    # shift is frozen at 0, which makes it the reference's BN(center=False) (sslax's head).
    self.head = lightly.models.modules.heads.SimCLRProjectionHead(
      self.backbone.dim, cfg["proj_hidden_dim"], cfg["proj_dim"], cfg["proj_layers"], True
    )
    init_linears_like_flax(self.head)
    last_bn = self.head.layers[-1]
    assert isinstance(last_bn, nn.BatchNorm1d)
    last_bn.bias.requires_grad_(False)
    self.trained = nn.ModuleList([self.backbone, self.head])
    self.criterion = lightly.loss.NTXentLoss(temperature=cfg["temperature"])

  def loss(self, views, step):
    b = views[0].shape[0]
    z = self.head(self.backbone(torch.cat(views)))  # BN over all 2B crops, as sslax
    # lightly averages over the 2B anchors; sslax (and SimCLR's code) sum loss_a + loss_b = 2x.
    loss = 2 * self.criterion(z[:b], z[b:])
    return loss, {}

  def after_step(self, step):
    pass


class BYOL:
  def __init__(self, recipe, lightly):
    cfg, heads = recipe["byol"], lightly.models.modules.heads
    self.total_steps, self.base_momentum = recipe["total_steps"], cfg["base_momentum"]
    self.update_momentum = lightly.models.utils.update_momentum
    self.backbone = make_backbone(recipe)
    d = self.backbone.dim
    # BYOL's MLP: Linear with bias -> BN -> ReLU -> Linear without bias (lightly's
    # BYOLProjectionHead puts the bias on the other Linear), via lightly's ProjectionHead.
    self.projector = head_mlp(heads, [d, cfg["proj_hidden_dim"], cfg["proj_dim"]], True, False)
    self.predictor = head_mlp(
      heads, [cfg["proj_dim"], cfg["pred_hidden_dim"], cfg["proj_dim"]], True, False
    )
    init_linears_like_flax(self.projector)
    init_linears_like_flax(self.predictor)
    self.online = nn.Sequential(self.backbone, self.projector)
    self.target = copy.deepcopy(self.online)
    for p in self.target.parameters():
      p.requires_grad_(False)
    self.trained = nn.ModuleList([self.backbone, self.projector, self.predictor])
    self.criterion = lightly.loss.NegativeCosineSimilarity()

  def set_train(self):
    self.target.train()

  def loss(self, views, step):
    z = [self.online(v) for v in views]  # one pass per view: BN per view, as sslax
    p = [self.predictor(zi) for zi in z]
    with torch.no_grad():
      t = [self.target(v) for v in views]  # train mode: the target's own batch statistics
    # sslax: mean of (2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)) = 4 + 2 (negcos12 + negcos21).
    loss = 4 + 2 * (self.criterion(p[0], t[1]) + self.criterion(p[1], t[0]))
    return loss, {}

  def after_step(self, step):
    tau = cosine_increase(self.base_momentum, 1.0, step, self.total_steps)
    self.update_momentum(self.online, self.target, tau)


class BarlowTwins:
  def __init__(self, recipe, lightly):
    cfg = recipe["barlow_twins"]
    if cfg["lambda_offdiag_is_1_over_dim"]:
      raise ValueError("lambda_offdiag_is_1_over_dim is not implemented on the torch side")
    self.backbone = make_backbone(recipe)
    dims = [self.backbone.dim] + [cfg["proj_hidden_dim"]] * (cfg["proj_layers"] - 1)
    # Every Linear without a bias (the reference; lightly's BarlowTwinsProjectionHead keeps a
    # bias on the last one), via lightly's ProjectionHead.
    self.projector = head_mlp(
      lightly.models.modules.heads, dims + [cfg["proj_dim"]], hidden_bias=False, out_bias=False
    )
    init_linears_like_flax(self.projector)
    self.net = nn.Sequential(self.backbone, self.projector)
    self.trained = self.net
    self.criterion = lightly.loss.BarlowTwinsLoss(lambda_param=cfg["lambda_offdiag"])

  def loss(self, views, step):
    z1, z2 = (self.net(v) for v in views)  # one pass per view, as sslax
    return self.criterion(z1, z2), {}

  def after_step(self, step):
    pass


def _encode_groups(backbone, views):
  """Backbone once per group of consecutive equal-size views (the references'
  MultiCropWrapper, sslax's encode_crops) -> features [V * B, F] in view order."""
  out, start = [], 0
  for i in range(1, len(views) + 1):
    if i == len(views) or views[i].shape[-1] != views[start].shape[-1]:
      out.append(backbone(torch.cat(views[start:i])))
      start = i
  return torch.cat(out)


class SwAV:
  def __init__(self, recipe, lightly):
    cfg, heads = recipe["swav"], lightly.models.modules.heads
    if cfg["queue_length"]:
      raise ValueError("the SwAV queue is not implemented on the torch side (the recipe has none)")
    self.backbone = make_backbone(recipe)
    self.head = heads.SwaVProjectionHead(self.backbone.dim, cfg["proj_hidden_dim"], cfg["proj_dim"])
    init_linears_like_flax(self.head)
    self.prototypes = heads.SwaVPrototypes(
      cfg["proj_dim"],
      cfg["num_prototypes"],
      n_steps_frozen_prototypes=cfg["freeze_prototypes_steps"],
    )
    # lightly's prototypes are an nn.Linear with a bias; SwAV's (and sslax's) have none.
    self.prototypes.heads[0].bias = None
    lecun_normal_(self.prototypes.heads[0].weight)
    self.trained = nn.ModuleList([self.backbone, self.head, self.prototypes])
    self.criterion = lightly.loss.SwaVLoss(
      temperature=cfg["temperature"],
      sinkhorn_iterations=cfg["sinkhorn_iterations"],
      sinkhorn_epsilon=cfg["epsilon"],
    )

  def loss(self, views, step):
    b = views[0].shape[0]
    with torch.no_grad():  # the reference and lightly: unit prototypes before each step
      self.prototypes.normalize()
    z = F.normalize(self.head(_encode_groups(self.backbone, views)), dim=1)  # head BN: all crops
    scores = self.prototypes(z, step).split(b)
    return self.criterion(list(scores[:2]), list(scores[2:])), {}

  def after_step(self, step):
    pass


class DINO:
  def __init__(self, recipe, lightly):
    cfg, heads = recipe["dino"], lightly.models.modules.heads
    if cfg["head_layers"] != 3 or cfg["weight_decay_end"] >= 0:
      raise ValueError("only the 3-layer DINO head and a constant weight decay are implemented")
    self.total_steps, self.momentum_teacher = recipe["total_steps"], cfg["momentum_teacher"]
    self.freeze_steps = round(cfg["freeze_last_layer_epochs"] * recipe["steps_per_epoch"])
    self.update_momentum = lightly.models.utils.update_momentum

    def network():
      backbone = make_backbone(recipe)
      head = heads.DINOProjectionHead(
        backbone.dim,
        cfg["hidden_dim"],
        cfg["bottleneck_dim"],
        cfg["out_dim"],
        batch_norm=cfg["head_use_bn"],
        norm_last_layer=cfg["norm_last_layer"],
      )
      return backbone, head

    self.backbone, self.head = network()
    lecun_normal_(self.head.last_layer.weight_v)  # flax's init of the prototype directions
    self.student = nn.ModuleList([self.backbone, self.head])
    # The teacher starts as a copy of the student (copy.deepcopy cannot copy weight_norm).
    self.teacher = nn.ModuleList(network())
    self.teacher.load_state_dict(self.student.state_dict())
    for p in self.teacher.parameters():
      p.requires_grad_(False)
    self.trained = self.student
    steps_per_epoch = recipe["steps_per_epoch"]
    self.temp_at = lambda step: _teacher_temp(cfg, step // steps_per_epoch)
    self.criterion = lightly.loss.DINOLoss(
      output_dim=cfg["out_dim"],
      warmup_teacher_temp=cfg["warmup_teacher_temp"],
      teacher_temp=cfg["teacher_temp"],
      warmup_teacher_temp_epochs=max(int(cfg["warmup_teacher_temp_epochs"]), 1),
      student_temp=cfg["student_temp"],
      center_momentum=cfg["center_momentum"],
    )

  def set_train(self):
    self.teacher.train()

  def loss(self, views, step):
    b = views[0].shape[0]
    student = self.head(_encode_groups(self.backbone, views)).split(b)  # head BN: all crops
    with torch.no_grad():  # the teacher sees the 2 global crops, in train mode
      t_backbone, t_head = self.teacher
      teacher = t_head(t_backbone(torch.cat(views[:2]))).split(b)
    loss = self.criterion(list(teacher), list(student), teacher_temp=self.temp_at(step))
    return loss, {}

  def before_update(self, step):
    if step < self.freeze_steps:  # lightly's cancel_last_layer_gradients, counted in steps
      for p in self.head.last_layer.parameters():
        p.grad = None

  def after_step(self, step):
    m = cosine_increase(self.momentum_teacher, 1.0, step, self.total_steps)
    self.update_momentum(self.student, self.teacher, m)


def _teacher_temp(cfg, epoch):
  """np.linspace(warmup, final, warmup_epochs)[epoch], then final (DINO's schedule)."""
  n = int(cfg["warmup_teacher_temp_epochs"])
  if n <= 0 or epoch >= n:
    return cfg["teacher_temp"]
  w, f = cfg["warmup_teacher_temp"], cfg["teacher_temp"]
  return w + (f - w) * epoch / max(n - 1, 1)


METHODS = {"simclr": SimCLR, "byol": BYOL, "barlow_twins": BarlowTwins, "swav": SwAV, "dino": DINO}


# ---------------------------------------------------------------------------------------------
# Optimizer, schedule, training loop, features
# ---------------------------------------------------------------------------------------------


def lr_at(step, recipe):
  """Linear warmup from 0 over int(warmup_epochs * steps_per_epoch) steps, then cosine to
  end_lr at total_steps; no batch scaling (optimizer.lr_scaling 'none')."""
  opt, total = recipe["optimizer"], recipe["total_steps"]
  peak = opt["base_lr"]
  warmup = min(int(opt["warmup_epochs"] * recipe["steps_per_epoch"]), total)
  if step < warmup:
    return peak * step / warmup
  decay = max(total, warmup + 1) - warmup
  progress = min(step - warmup, decay) / decay
  return opt["end_lr"] + (peak - opt["end_lr"]) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(params, recipe):
  """AdamW; biases and 1-D params (norm scales / shifts) without weight decay."""
  opt = recipe["optimizer"]
  if opt["name"] != "adamw" or opt["lr_scaling"] != "none" or opt["grad_clip_norm"]:
    raise ValueError(f"only AdamW without lr scaling or clipping is implemented, got {opt}")
  if opt["lr_decay_epochs"] or opt["warmup_start_lr"] or opt["bias_lr_ratio"] != 1.0:
    raise ValueError(f"only warmup-from-0 + cosine schedules are implemented, got {opt}")
  params = [p for p in params if p.requires_grad]
  exclude = opt["exclude_bias_and_norm"]
  decay = [p for p in params if p.ndim > 1 or not exclude]
  rest = [p for p in params if not (p.ndim > 1 or not exclude)]
  return torch.optim.AdamW(
    [
      {"params": decay, "weight_decay": opt["weight_decay"]},
      {"params": rest, "weight_decay": 0.0},
    ],
    lr=0.0,
    betas=(opt["b1"], opt["b2"]),
    eps=opt["eps"],
  )


@torch.no_grad()
def features(backbone, images, batch_size=512):
  """Eval view: the whole 28 px image in [0, 1] (sslax's center_view at crop_fraction 1)."""
  backbone.eval()
  out = []
  for start in range(0, len(images), batch_size):
    x = torch.from_numpy(images[start : start + batch_size]).float().div_(255.0)[:, None]
    out.append(backbone(x).numpy())
  return np.concatenate(out).astype(np.float32)


def run(args):
  lightly = _import_lightly()
  torch.set_num_threads(args.threads)
  with open(args.recipe) as f:
    recipe = json.load(f)
  with np.load(args.data, allow_pickle=False) as d:
    train_images, train_labels = d["train_images"], d["train_labels"]
    test_images, test_labels = d["test_images"], d["test_labels"]
  if train_images.ndim == 4:  # [N, H, W, 1]
    train_images, test_images = train_images[..., 0], test_images[..., 0]
  n_train = len(train_images)
  steps, batch = recipe["total_steps"], recipe["batch_size"]
  recipe["steps_per_epoch"] = max(n_train // batch, 1)
  recipe["channels"] = 1
  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  method = METHODS[recipe["method"]](recipe, lightly)
  specs = view_specs(recipe)
  optimizer = make_optimizer(method.trained.parameters(), recipe)
  train_tensor = torch.from_numpy(train_images)
  skip = 100 if steps > 100 else 1  # steps excluded from the timing (sslax's first log interval)
  step_times, compute_times, losses = [], [], []
  order = np.empty(0, np.int64)
  for step in range(steps):
    t0 = time.perf_counter()
    if len(order) < batch:  # a new epoch: a fresh permutation, the last partial batch dropped
      perm = rng.permutation(n_train)
      order = perm[: len(perm) // batch * batch]
    idx, order = order[:batch], order[batch:]
    images = train_tensor[torch.from_numpy(idx)].float().div_(255.0)
    views = [make_view(rng, images, spec) for spec in specs]
    t1 = time.perf_counter()
    method.trained.train()
    if hasattr(method, "set_train"):
      method.set_train()
    lr = lr_at(step, recipe)
    for group in optimizer.param_groups:
      group["lr"] = lr
    loss, _ = method.loss(views, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if hasattr(method, "before_update"):
      method.before_update(step)
    optimizer.step()
    with torch.no_grad():
      method.after_step(step)
    t2 = time.perf_counter()
    losses.append(float(loss.detach()))
    if not math.isfinite(losses[-1]):
      raise FloatingPointError(f"loss {losses[-1]} at step {step}")
    if step >= skip:
      step_times.append(t2 - t0)
      compute_times.append(t2 - t1)
    if (step + 1) % args.log_every == 0 or step + 1 == steps:
      recent = np.mean(losses[-args.log_every :])
      print(
        f"step {step + 1}/{steps} loss {recent:.4f} lr {lr:.3g} {t2 - t0:.2f} s/step", flush=True
      )
  bank = slice(0, args.eval_train)
  t0 = time.perf_counter()
  bank_features = features(method.backbone, train_images[bank])
  test_features = features(method.backbone, test_images)
  featurise_s = time.perf_counter() - t0
  os.makedirs(args.out, exist_ok=True)
  np.savez(
    os.path.join(args.out, "features.npz"),
    bank=bank_features,
    bank_labels=train_labels[bank].astype(np.int32),
    test=test_features,
    test_labels=test_labels.astype(np.int32),
  )
  result = {
    "method": recipe["method"],
    "seed": args.seed,
    "steps": steps,
    "batch_size": batch,
    "torch_version": torch.__version__,
    "lightly_version": getattr(lightly, "__version__", "?"),
    "threads": torch.get_num_threads(),
    "timed_steps": f"{skip + 1}..{steps}",
    "step_s": float(np.mean(step_times)),
    "compute_step_s": float(np.mean(compute_times)),
    "featurise_s": round(featurise_s, 1),
    "loss_first": losses[0],
    "loss_last_50": float(np.mean(losses[-50:])),
    "num_params": sum(p.numel() for p in method.trained.parameters()),
  }
  with open(os.path.join(args.out, "result.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--method", required=True, choices=sorted(METHODS))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--recipe", required=True, help="the method's sslax config as JSON")
  parser.add_argument("--data", required=True, help=".npz with train/test images and labels")
  parser.add_argument("--out", required=True)
  parser.add_argument("--eval_train", type=int, default=10000)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--log_every", type=int, default=25)
  args = parser.parse_args()
  run(args)


if __name__ == "__main__":
  main()

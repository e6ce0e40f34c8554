"""Evaluation on held-out scenes: PSNR, SSIM, LPIPS, trivial baselines and PNG grids."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import parallel
from lrm_jax.data import pipeline, sources, view_sampling
from lrm_jax.io import images as image_io
from lrm_jax.train import metrics as metrics_lib


def nearest_view_prediction(inputs: dict, targets: dict) -> np.ndarray:
  """The trivial prediction "the input view nearest to the target, as is".

  Nearest = the smallest angle between camera viewing directions; the input image is resized
  to the target size. Returns ``[B, Vt, H, W, 3]`` (the targets' shape).
  """
  fwd_in = inputs["c2w"][..., :3, 2]  # [B, Vi, 3]
  fwd_t = targets["c2w"][..., :3, 2]  # [B, Vt, 3]
  cos = np.einsum("bid,btd->bti", fwd_in, fwd_t)
  nearest = np.argmax(cos, axis=-1)  # [B, Vt]
  hw = targets["images"].shape[-3:-1]
  out = np.empty(targets["images"].shape, np.float32)
  for b in range(nearest.shape[0]):
    for v in range(nearest.shape[1]):
      out[b, v] = view_sampling.resize_image(inputs["images"][b, nearest[b, v]], hw)
  return out


def baselines(inputs: dict, targets: dict, background) -> dict:
  """Per-image MSEs of the two trivial predictions: background alone, nearest input view."""
  bg = np.broadcast_to(np.asarray(background, np.float32), targets["images"].shape)
  err = lambda p: np.mean(np.square(p - targets["images"]), axis=(-3, -2, -1))
  return {"background": err(bg), "nearest_view": err(nearest_view_prediction(inputs, targets))}


class Evaluator:
  """Renders the held-out (eval split) scenes' target views and scores them."""

  def __init__(self, config, model, mesh, rules, workdir: str | None, perceptual=None,
               split: str = "eval", source=None, spec: dict | None = None,
               extra_metrics=None, grid_name: str | None = None):
    self.config, self.model, self.mesh, self.rules = config, model, mesh, rules
    self.workdir = workdir
    self.grid_name = grid_name  # workdir/eval/<grid_name>.png (None: step_XXXXXX.png)
    self.perceptual = perceptual
    self.split = split
    self.source = source
    self.spec = spec  # the family's batch spec (its extra per-view fields)
    self.extra_metrics = extra_metrics  # the family's eval_metrics hook (or None)
    self.last = None
    self._fn = None
    self._bg = jnp.asarray(config.data.background, jnp.float32)

  def _render_fn(self):
    if self._fn is None:
      model, bg, perceptual, extra = self.model, self._bg, self.perceptual, self.extra_metrics

      def render(params, batch):
        cams = pipeline.batch_cameras(batch["targets"])
        rendered, rep = model.apply({"params": params}, batch["inputs"], cams, bg, train=False)
        rgb = jnp.clip(rendered["rgb"], 0.0, 1.0)
        tgt = batch["targets"]["images"]
        out = {"rgb": rgb, "mse": metrics_lib.mse(rgb, tgt), "ssim": metrics_lib.ssim(rgb, tgt)}
        if perceptual is not None:
          flat = lambda x: x.reshape((-1,) + x.shape[-3:])
          out["lpips"] = perceptual(flat(rgb), flat(tgt)).reshape(rgb.shape[:2])
        if extra is not None:
          out["extra"] = extra(model, params, batch, rep, bg)
        return out
      # Replicated outputs: every process can read them (multi-host) without a gather.
      self._fn = parallel.jit(render, out_shardings=parallel.replicated(self.mesh))
    return self._fn

  def batches(self):
    d = self.config.data
    src = self.source
    if src is None:
      src = sources.make_source(d.source, d, split=self.split, seed=self.config.seed)
    n = len(src)
    bs = pipeline.per_process_batch_size(d.batch_size) * jax.process_count()
    if n < bs:
      raise ValueError(f"evaluation needs at least data.batch_size={bs} held-out scenes; "
                       f"the {self.split} split has {n}.")
    return pipeline.make_iterator(self.config, self.split, source=src, spec=self.spec)

  def run(self, params, step: int) -> dict:
    """Scores every full batch of held-out scenes; writes a PNG grid of the first batch."""
    fn = self._render_fn()
    mses, ssims, lpipss, base_bg, base_nv = [], [], [], [], []
    first, num_scenes = None, 0
    extras = {}
    with parallel.use_mesh(self.mesh, self.rules):
      for local in self.batches():
        out = jax.device_get(fn(params, parallel.to_global_batch(local, self.mesh, self.rules)))
        mses.append(out["mse"].reshape(-1))
        num_scenes += int(out["mse"].shape[0])
        ssims.append(out["ssim"].reshape(-1))
        if "lpips" in out:
          lpipss.append(out["lpips"].reshape(-1))
        for name, value in out.get("extra", {}).items():
          extras.setdefault(name, []).append(np.asarray(value).reshape(-1))
        # Host-side, from this process's rows: gathered, so every process scores them all.
        b = baselines(local["inputs"], local["targets"], self.config.data.background)
        base_bg.append(parallel.gather_rows(b["background"]).reshape(-1))
        base_nv.append(parallel.gather_rows(b["nearest_view"]).reshape(-1))
        if first is None:  # this process's rows of the (replicated) predictions
          rows = parallel.process_rows(self.mesh, self.rules, out["rgb"].shape[0])
          first = (local, out["rgb"][rows])
    psnr_of = lambda errs: float(np.mean(metrics_lib.psnr_from_mse(np.concatenate(errs))))
    result = {
        "step": int(step),
        "psnr": psnr_of(mses),
        "ssim": float(np.mean(np.concatenate(ssims))),
        "lpips": float(np.mean(np.concatenate(lpipss))) if lpipss else None,
        "baseline_background_psnr": psnr_of(base_bg),
        "baseline_nearest_view_psnr": psnr_of(base_nv),
        "num_scenes": num_scenes,
        "num_views": int(sum(len(m) for m in mses)),
    }
    for name, values in extras.items():
      values = np.concatenate(values)
      result[name] = float(np.nanmean(values)) if np.any(np.isfinite(values)) else None
    result["baseline_psnr"] = max(result["baseline_background_psnr"],
                                  result["baseline_nearest_view_psnr"])
    if self.workdir and jax.process_index() == 0 and first is not None:
      self.write_grid(first[0], first[1], step)
    self.last = result
    return result

  def write_grid(self, local: dict, pred: np.ndarray, step: int) -> str:
    """``eval/step_XXXXXX.png`` (or ``eval/<grid_name>.png``): per scene, inputs |
    predictions | targets."""
    rows = []
    for b in range(min(4, pred.shape[0])):
      rows.append(list(local["inputs"]["images"][b]))
      rows.append(list(pred[b][:8]))  # protocols score every other view: show 8
      rows.append(list(local["targets"]["images"][b][:8]))
    name = self.grid_name or f"step_{step:06d}"
    path = os.path.join(self.workdir, "eval", f"{name}.png")
    return image_io.save_png(path, image_io.grid(rows))


def write_eval_json(workdir: str, result: dict) -> str:
  path = os.path.join(workdir, "eval.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  return path

"""Pixel-aligned Gaussians at the true depth (an oracle) against the trivial baselines.

  python bench/pixel_gaussians_oracle.py [--config configs/long_lrm.py:tiny,rooms=True]
      [--scales 0.25 0.5 1] [--no-append] [--overrides data.num_input_views=8 ...]

For every held-out (eval split) scene of the config's source, one Gaussian per input pixel
placed at the source's TRUE depth on the pixel's ray, coloured by the input pixel (SH DC),
opacity 0.99 (0 where the depth is unknown), isotropic with a standard deviation of
``scale`` x the pixel's footprint at that depth, is splatted into the target views by the
config's renderer. Its PSNR (as ``eval.psnr``: the mean of per-image PSNRs) is printed beside
the evaluator's trivial baselines (background alone, nearest input view). It is a reference,
not a bound: a network that outputs pixel-aligned Gaussians (GRM, Long-LRM) also chooses
each Gaussian's size, shape and opacity and can fill what no input sees. It says how much
exact geometry alone is worth over ``baseline_psnr`` on that data.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lrm_jax import cameras as cam  # noqa: E402
from lrm_jax import cli  # noqa: E402
from lrm_jax.config_loading import load_config  # noqa: E402
from lrm_jax.errors import ConfigError  # noqa: E402
from lrm_jax.data import pipeline, sources  # noqa: E402
from lrm_jax.models import pixel_gaussians  # noqa: E402
from lrm_jax.representations import gaussians as gs  # noqa: E402
from lrm_jax.representations import sh as sh_lib  # noqa: E402
from lrm_jax.train import evaluation, metrics as metrics_lib  # noqa: E402


def oracle_gaussians(inputs: dict, scale: float) -> gs.Gaussians:
  """``[B, V H W]`` Gaussians at the inputs' true depths (camera z), coloured by the pixels."""
  b, v, h, w, _ = inputs["images"].shape
  origins, dirs = cam.get_rays(inputs["c2w"], inputs["intrinsics"], h, w)  # [B,V,H,W,3]
  forward = inputs["c2w"][:, :, None, None, :3, 2]
  z = inputs["depths"]  # [B, V, H, W, 1], 0 = unknown
  dist = z / jnp.abs(jnp.sum(dirs * forward, -1, keepdims=True))  # along the unit ray
  footprint = dist / inputs["intrinsics"][:, :, None, None, 0:1]  # one pixel at that depth
  known = (z > 0) & (inputs.get("masks", jnp.ones_like(z)) > 0.5)
  n = v * h * w
  flat = lambda x: jnp.asarray(x, jnp.float32).reshape(b, n, -1)
  sh = ((flat(inputs["images"]) - 0.5) / sh_lib.SH_C0)[:, :, None, :]  # DC only
  return gs.Gaussians(gs.unproject(flat(origins), flat(dirs), flat(dist)),
                      jnp.broadcast_to(flat(footprint) * scale, (b, n, 3)),
                      jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0, 0.0]), (b, n, 4)),
                      0.99 * flat(known), sh)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/long_lrm.py:tiny,rooms=True")
  parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0])
  parser.add_argument("--overrides", nargs="*", default=[])
  parser.add_argument("--no-append", action="store_true")
  args = parser.parse_args()
  config = load_config(args.config, args.overrides)
  d = config.data
  source = sources.make_source(d.source, d, split="eval", seed=config.seed)
  background = jnp.asarray(d.background, jnp.float32)
  errors = {s: [] for s in args.scales}
  base = {"background": [], "nearest_view": []}
  for batch in pipeline.make_iterator(config, "eval", source=source):
    if not np.any(np.asarray(batch["inputs"].get("depths", 0.0)) > 0):
      raise ConfigError(f"data.source={d.source!r} gives no depths (0 everywhere): the "
                        "oracle needs a source with depth (synthetic, rooms, mesh).")
    cams = pipeline.batch_cameras(batch["targets"])
    target = batch["targets"]["images"]
    for s in args.scales:
      g = oracle_gaussians(batch["inputs"], s)
      rgb = np.clip(np.asarray(pixel_gaussians.render_gaussians(config.model, g, cams,
                                                                background)["rgb"]), 0, 1)
      errors[s].append(np.mean(np.square(rgb - target), axis=(-3, -2, -1)).ravel())
    for k, e in evaluation.baselines(batch["inputs"], batch["targets"], d.background).items():
      base[k].append(e.ravel())
  psnr = lambda e: float(np.mean(metrics_lib.psnr_from_mse(np.concatenate(e))))
  bg, nv = psnr(base["background"]), psnr(base["nearest_view"])
  views = f"{d.num_input_views} -> {d.num_target_views}"
  rows = [[args.config, d.source, views, s, psnr(errors[s]), nv, bg, psnr(errors[s]) - max(bg, nv)]
          for s in args.scales]
  common.report("Pixel-aligned Gaussians at the true depth (oracle) vs the baselines",
                ["config", "source", "views in -> targets", "scale (pixel footprints)",
                 "oracle PSNR", "nearest view", "background", "oracle - baseline_psnr"],
                rows, notes=f"{len(np.concatenate(base['background']))} held-out target views; "
                "overrides: " + (" ".join(args.overrides) or "none"),
                append=not args.no_append)


if __name__ == "__main__":
  # A bad config, source or path: one line, not a traceback.
  cli.report_user_errors(lambda argv: main(), prog="bench/pixel_gaussians_oracle.py")(sys.argv)

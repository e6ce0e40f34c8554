"""Per-scene optimisation of a triplane NeRF to posed images; mesh, video and metrics out.

  python -m lrm_jax.fit_triplane --views=mesh:../shared/data/cow_mesh/cow.obj --out=DIR \
      [--num_views=32 --resolution=128 --steps=2000 --time_limit=600 \
       --mesh_resolution=256 --reference_mesh=PATH]

The views come from any source spec of :func:`lrm_jax.data.sources.make_source` (its first
example). Every ``num_views // num_held_out``-th view is held out; the rest are fitted with
Adam on random batches of rays (stratified + importance samples) through
:mod:`lrm_jax.render.triplane`. Writes:

  DIR/summary.json     held-out PSNR (mean of per-view PSNR), train PSNR, steps, wall time,
                       Chamfer distance to the reference mesh (when given), settings
  DIR/views.png        held-out views: target | prediction
  DIR/mesh.obj, .glb   marching cubes of the density, decoder vertex colours
  DIR/turntable.mp4    (or .gif) a turn around the object
  DIR/triplane.npz     planes and decoder parameters

Chamfer distance (``chamfer``): ``n`` points are sampled uniformly (by area) on each surface;
with ``d(p, Q)`` the distance of ``p`` to the nearest sample of ``Q`` (scipy ``cKDTree``),
``chamfer = (mean_p d(p, Q) + mean_q d(q, P)) / 2`` -- a symmetric mean nearest-neighbour
distance (not squared), in the units of the normalised object frame of the source (objects in
``[-1, 1]^3``). The reference ``.obj`` is normalised exactly as the mesh source normalises
the views' mesh (up axis to +z, same box and radius).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrm_jax import cameras as cam
from lrm_jax.io import images as images_io
from lrm_jax.io import mesh as mesh_io
from lrm_jax.io import video
from lrm_jax.render import triplane as tp
from lrm_jax.train import metrics


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """Settings of one fit (defaults reach the cow bar on a 2-core CPU)."""

  plane_size: int = 96
  plane_channels: int = 24
  plane_init_std: float = 0.01
  hidden: int = 64
  num_coarse: int = 32
  num_fine: int = 32
  eval_coarse: int = 48
  eval_fine: int = 48
  rays_per_step: int = 2048
  steps: int = 2000
  time_limit: float = 600.0  # seconds of optimisation; stops early when exceeded
  plane_lr: float = 2e-2
  decoder_lr: float = 2e-3
  warmup: int = 50
  tv_weight: float = 1e-3
  mask_weight: float = 0.1
  seed: int = 0


# ----------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------


def load_views(spec: str, num_views: int, resolution: int, seed: int = 0):
  """``(example, source)``: the first example of the source ``spec`` at ``resolution``."""
  from configs import common
  from lrm_jax.data import sources

  d = common.data_config()
  d.source = spec
  d.render_size = resolution
  d.views_per_scene = num_views
  source = sources.make_source(spec, d, "train", seed)
  example = source[0]
  if example["images"].shape[0] < 2:
    raise ValueError(f"{spec}: need at least 2 views to fit and hold out, got "
                     f"{example['images'].shape[0]}.")
  return example, source


def held_out_indices(num_views: int, num_held_out: int) -> np.ndarray:
  """Evenly spread held-out view indices (``num_views // num_held_out`` apart)."""
  num_held_out = max(1, min(num_held_out, num_views - 1))
  return np.arange(num_held_out) * (num_views // num_held_out)


def training_rays(example: dict, views: np.ndarray) -> dict[str, np.ndarray]:
  """Flat arrays of the rays of ``views`` that hit the object box (the rest are background).

  Returns ``origins, dirs, rgb [N, 3]`` and ``mask [N, 1]``.
  """
  h, w = example["images"].shape[1:3]
  o, d = cam.get_rays(example["c2w"][views], example["intrinsics"][views], h, w)
  o, d = o.reshape(-1, 3), d.reshape(-1, 3)
  _, _, hit = tp.ray_box_intersect(jnp.asarray(o), jnp.asarray(d))
  keep = np.asarray(hit)
  return {"origins": o[keep], "dirs": d[keep],
          "rgb": example["images"][views].reshape(-1, 3)[keep],
          "mask": example["masks"][views].reshape(-1, 1)[keep]}


# ----------------------------------------------------------------------------------------
# Model, loss, step.
# ----------------------------------------------------------------------------------------


def init_params(config: FitConfig, key) -> tuple[tp.TriplaneDecoder, dict]:
  """The decoder module and ``{"planes": [3, S, S, C], "decoder": ...}``."""
  decoder = tp.TriplaneDecoder(hidden=config.hidden)
  k_planes, k_dec = jax.random.split(key)
  size, ch = config.plane_size, config.plane_channels
  planes = config.plane_init_std * jax.random.normal(k_planes, (3, size, size, ch),
                                                     jnp.float32)
  dec_params = decoder.init(k_dec, jnp.zeros((1, 3 * ch), jnp.float32))
  return decoder, {"planes": planes, "decoder": dec_params}


def make_optimizer() -> optax.GradientTransformation:
  """Adam moments per group; the learning rates are applied in the step (see lr_factor)."""
  return optax.multi_transform({"planes": optax.scale_by_adam(),
                                "decoder": optax.scale_by_adam()},
                               {"planes": "planes", "decoder": "decoder"})


def lr_factor(step: jax.Array, progress: jax.Array, warmup: int,
              final: float = 0.05) -> jax.Array:
  """Linear warmup over ``warmup`` steps, then cosine from 1 to ``final`` over ``progress``.

  ``progress`` in [0, 1] is the larger of the step and the wall-time fractions of the
  budget, so the schedule anneals fully whether the step or the time limit ends the fit.
  """
  warm = jnp.minimum(1.0, (step + 1.0) / warmup)
  cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)))
  return warm * (final + (1.0 - final) * cosine)


def total_variation(planes: jax.Array) -> jax.Array:
  """Mean squared difference of neighbouring texels of ``planes [3, S, S, C]``."""
  dy = jnp.mean(jnp.square(planes[:, 1:] - planes[:, :-1]))
  dx = jnp.mean(jnp.square(planes[:, :, 1:] - planes[:, :, :-1]))
  return dx + dy


def make_train_step(decoder, optimizer, config: FitConfig):
  """A jitted ``(params, opt_state, rays, step, progress) -> (params, opt_state, metrics)``.

  ``rays`` is the :func:`training_rays` dict (device arrays); each step draws a random
  batch of ``config.rays_per_step`` of them.
  """
  render_config = tp.RenderConfig(num_coarse=config.num_coarse, num_fine=config.num_fine,
                                  chunk=config.rays_per_step)
  root = jax.random.key(config.seed + 1)

  def loss_fn(params, batch, key):
    out = tp.render_rays(decoder.apply, params["decoder"], params["planes"],
                         batch["origins"], batch["dirs"], render_config, key)
    mse = jnp.mean(jnp.square(out["rgb"] - batch["rgb"]))
    mask = jnp.mean(jnp.square(out["alpha"] - batch["mask"]))
    tv = total_variation(params["planes"])
    loss = mse + config.mask_weight * mask + config.tv_weight * tv
    return loss, {"loss": loss, "mse": mse, "mask": mask, "tv": tv}

  @jax.jit
  def step(params, opt_state, rays, i, progress):
    key = jax.random.fold_in(root, i)
    k_rays, k_render = jax.random.split(key)
    idx = jax.random.randint(k_rays, (config.rays_per_step,), 0, rays["origins"].shape[0])
    batch = jax.tree.map(lambda x: x[idx], rays)  # [R, ...]
    grads, aux = jax.grad(loss_fn, has_aux=True)(params, batch, k_render)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    f = lr_factor(i, progress, config.warmup)
    updates = {"planes": jax.tree.map(lambda u: -config.plane_lr * f * u, updates["planes"]),
               "decoder": jax.tree.map(lambda u: -config.decoder_lr * f * u,
                                       updates["decoder"])}
    return optax.apply_updates(params, updates), opt_state, aux

  return step


# ----------------------------------------------------------------------------------------
# Evaluation and outputs.
# ----------------------------------------------------------------------------------------


def render_views(decoder, params, c2w, intrinsics, height, width, config: FitConfig,
                 chunk: int = 8192) -> dict[str, np.ndarray]:
  """Deterministic renders ``[V, H, W, ...]`` of the fitted triplane."""
  render_config = tp.RenderConfig(num_coarse=config.eval_coarse, num_fine=config.eval_fine,
                                  chunk=chunk)
  cameras = cam.Cameras(jnp.asarray(c2w)[None], jnp.asarray(intrinsics)[None], height, width)
  out = tp.render_triplane(decoder.apply, params["decoder"], params["planes"][None], cameras,
                           render_config)
  return {k: np.asarray(v[0]) for k, v in out.items()}


def reference_mesh(path: str, source) -> tuple[np.ndarray, np.ndarray]:
  """``(vertices, faces)`` of the ``.obj`` at ``path`` in the source's normalised frame."""
  from lrm_jax.data import meshes

  if getattr(source, "path", None) == os.path.abspath(path) and hasattr(source, "mesh"):
    m = source.mesh  # exactly the mesh the views were rendered from
  else:
    max_radius = getattr(source, "max_radius", None)
    m = meshes.normalize_mesh(meshes.load_obj(path), getattr(source, "up_axis", "y"),
                              max_radius=max_radius)
  return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def chamfer_distance(verts_a, faces_a, verts_b, faces_b, num_points: int = 30000,
                     seed: int = 0) -> dict[str, float]:
  """Symmetric mean nearest-neighbour distance between two surfaces (module docstring)."""
  import trimesh
  from scipy.spatial import cKDTree

  def sample(v, f, s):
    mesh = trimesh.Trimesh(v, f, process=False)
    return np.asarray(trimesh.sample.sample_surface(mesh, num_points, seed=s)[0])

  pa, pb = sample(verts_a, faces_a, seed), sample(verts_b, faces_b, seed + 1)
  a_to_b = float(np.mean(cKDTree(pb).query(pa)[0]))
  b_to_a = float(np.mean(cKDTree(pa).query(pb)[0]))
  return {"chamfer": 0.5 * (a_to_b + b_to_a), "pred_to_ref": a_to_b, "ref_to_pred": b_to_a}


def save_triplane(path: str, params: dict, config: FitConfig) -> str:
  """``planes`` and flattened ``decoder/...`` parameters (+ decoder settings) in an npz."""
  flat = flax.traverse_util.flatten_dict(params["decoder"], sep="/")
  np.savez(path, planes=np.asarray(params["planes"]), hidden=config.hidden,
           **{f"decoder/{k}": np.asarray(v) for k, v in flat.items()})
  return path


def load_triplane(path: str) -> tuple[tp.TriplaneDecoder, dict]:
  """Inverse of :func:`save_triplane`: ``(decoder module, params)``."""
  data = np.load(path)
  flat = {k[len("decoder/"):]: jnp.asarray(data[k]) for k in data.files
          if k.startswith("decoder/")}
  params = {"planes": jnp.asarray(data["planes"]),
            "decoder": flax.traverse_util.unflatten_dict(flat, sep="/")}
  return tp.TriplaneDecoder(hidden=int(data["hidden"])), params


# ----------------------------------------------------------------------------------------
# The command.
# ----------------------------------------------------------------------------------------


def fit(example: dict, config: FitConfig, held_out: np.ndarray, log_every: int = 100):
  """Optimises a triplane to the non-held-out views. Returns ``(decoder, params, info)``."""
  num_views = example["images"].shape[0]
  train_views = np.setdiff1d(np.arange(num_views), held_out)
  rays = jax.tree.map(jnp.asarray, training_rays(example, train_views))
  decoder, params = init_params(config, jax.random.key(config.seed))
  optimizer = make_optimizer()
  opt_state = optimizer.init(params)
  step_fn = make_train_step(decoder, optimizer, config)

  t0 = time.perf_counter()
  params, opt_state, aux = step_fn(params, opt_state, rays, 0, 0.0)  # compiles
  jax.block_until_ready(params)
  compile_s = time.perf_counter() - t0
  steps, history = 1, []
  while steps < config.steps:
    elapsed = time.perf_counter() - t0
    if elapsed >= config.time_limit:
      break
    progress = max(steps / config.steps, elapsed / config.time_limit)
    params, opt_state, aux = step_fn(params, opt_state, rays, steps, progress)
    jax.block_until_ready(aux)  # no run-ahead: the clock and the schedule stay honest
    steps += 1
    if steps % log_every == 0 or steps == config.steps:
      aux = {k: float(v) for k, v in aux.items()}
      psnr = float(metrics.psnr_from_mse(aux["mse"]))
      history.append({"step": steps, "psnr": psnr, **aux,
                      "wall_s": time.perf_counter() - t0})
      print(f"step {steps:5d}  loss {aux['loss']:.5f}  batch psnr {psnr:.2f}  "
            f"{time.perf_counter() - t0:.0f}s", flush=True)
  jax.block_until_ready(params)
  info = {"steps": steps, "fit_wall_s": time.perf_counter() - t0, "compile_s": compile_s,
          "num_train_rays": int(rays["origins"].shape[0]),
          "train_views": train_views.tolist(), "history": history}
  return decoder, params, info


def evaluate(decoder, params, example, views, config: FitConfig) -> dict[str, Any]:
  """Per-view and mean PSNR of ``views`` and their renders."""
  h, w = example["images"].shape[1:3]
  out = render_views(decoder, params, example["c2w"][views], example["intrinsics"][views],
                     h, w, config)
  target = example["images"][views]
  per_view = np.asarray(metrics.psnr(jnp.asarray(out["rgb"]), jnp.asarray(target)))
  return {"psnr": float(per_view.mean()), "psnr_per_view": per_view.tolist(),
          "rgb": out["rgb"], "target": target}


def write_turntable(path: str, decoder, params, config: FitConfig, frames: int,
                    size: int) -> str:
  """A turntable video of the fitted triplane (elevation 20, radius 2.4, fov 50)."""
  c2w = cam.turntable_cameras(frames, elevation_deg=20.0, radius=2.4)
  k = np.broadcast_to(cam.intrinsics_from_fov(np.deg2rad(50.0), size, size), (frames, 4))
  rgb = render_views(decoder, params, c2w, k, size, size, config)["rgb"]
  return video.write_video(path, rgb, fps=12)


def export_and_compare(args, decoder, params, source) -> dict[str, Any]:
  """Writes the mesh; with a reference mesh, its Chamfer distance. Returns summary entries."""
  t0 = time.perf_counter()
  try:
    mesh = mesh_io.export_mesh(params["planes"], decoder.apply, params["decoder"], args.out,
                               args.mesh_resolution, args.mesh_threshold)
  except ValueError as e:  # no surface at this threshold: report it, keep the other outputs
    print(f"mesh export skipped: {e}", flush=True)
    return {"mesh": {"error": str(e)}}
  out = {"mesh": {"resolution": args.mesh_resolution, "threshold": args.mesh_threshold,
                  "num_vertices": mesh["num_vertices"], "num_faces": mesh["num_faces"],
                  "wall_s": time.perf_counter() - t0}}
  if args.reference_mesh:
    import trimesh
    pred = trimesh.load(mesh["obj"], force="mesh", process=False)
    ref_v, ref_f = reference_mesh(args.reference_mesh, source)
    out["chamfer"] = chamfer_distance(pred.vertices, pred.faces, ref_v, ref_f)
    out["chamfer"]["reference"] = os.path.abspath(args.reference_mesh)
  return out


def run(args) -> dict[str, Any]:
  """Fits, evaluates and exports; returns the summary (also written to summary.json)."""
  t_start = time.perf_counter()
  config = FitConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig)})
  os.makedirs(args.out, exist_ok=True)
  example, source = load_views(args.views, args.num_views, args.resolution, args.seed)
  num_views = example["images"].shape[0]
  held_out = held_out_indices(num_views, args.num_held_out)

  decoder, params, info = fit(example, config, held_out)
  held = evaluate(decoder, params, example, held_out, config)
  train = evaluate(decoder, params, example, np.asarray(info["train_views"][:4]), config)
  images_io.save_png(os.path.join(args.out, "views.png"), images_io.grid(
      [list(held["target"]), list(held["rgb"])]))
  save_triplane(os.path.join(args.out, "triplane.npz"), params, config)

  summary = {
      "views": args.views, "num_views": int(num_views), "resolution": args.resolution,
      "held_out_views": held_out.tolist(), "psnr_heldout": held["psnr"],
      "psnr_heldout_per_view": held["psnr_per_view"], "psnr_train": train["psnr"],
      "steps": info["steps"], "wall_s": info["fit_wall_s"], "compile_s": info["compile_s"],
      "num_train_rays": info["num_train_rays"], "config": dataclasses.asdict(config),
      "history": info["history"],
  }
  if args.mesh_resolution > 0:
    summary.update(export_and_compare(args, decoder, params, source))
  if args.turntable_frames > 0:
    summary["turntable"] = write_turntable(os.path.join(args.out, "turntable.mp4"), decoder,
                                           params, config, args.turntable_frames,
                                           args.resolution)
  summary["total_wall_s"] = time.perf_counter() - t_start
  with open(os.path.join(args.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "config")},
                   indent=2))
  return summary


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--views", required=True, help="source spec: mesh:PATH.obj, folder:DIR, ...")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--num_views", type=int, default=32, help="views rendered/loaded in all")
  p.add_argument("--num_held_out", type=int, default=4, help="of num_views, not fitted")
  p.add_argument("--resolution", type=int, default=128)
  for field in dataclasses.fields(FitConfig):  # every FitConfig field is a flag
    p.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
  p.add_argument("--mesh_resolution", type=int, default=256, help="0: no mesh")
  p.add_argument("--mesh_threshold", type=float, default=10.0)
  p.add_argument("--reference_mesh", default="", help=".obj for the Chamfer distance")
  p.add_argument("--turntable_frames", type=int, default=36, help="0: no video")
  return p.parse_args(argv)


def main(argv=None):
  run(parse_args(argv))


if __name__ == "__main__":
  main()

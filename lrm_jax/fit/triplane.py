"""Per-scene optimisation of a triplane NeRF to posed views; mesh, video and metrics out.

  python -m lrm_jax.fit.triplane --input=mesh:../shared/data/cow_mesh/cow.obj --out=DIR \\
      [--num_views=32 --resolution=128 --num_held_out=4 --steps=2000 --time_limit_s=600 \\
       --mesh_resolution=256 --reference_mesh=PATH --config.plane_size=96]

The views are one scene (``--scene_index``) of any source spec of
:func:`lrm_jax.data.sources.make_source`; ``--num_held_out`` evenly spaced views are kept
for evaluation (:func:`lrm_jax.fit.common.split_views`). The rest are fitted with Adam on
random batches of the rays that cross the object box (stratified + importance samples)
through :mod:`lrm_jax.render.triplane`; the loss is the colour MSE, ``mask_weight`` times
the squared error of the opacity against the masks (when they separate an object from the
background) and ``tv_weight`` times :func:`lrm_jax.render.triplane.total_variation` of the
planes. The learning rates warm up linearly and then follow a cosine over the schedule's
progress, the larger of the step and the wall-clock fractions of the budget. Writes:

  DIR/summary.json     psnr, ssim, num_views (held-out views scored) and baseline_psnr as in
                       the trainer's eval block; train_psnr (of 4 training views), steps,
                       wall_s, compile_s, num_train_rays, mesh, chamfer (with
                       --reference_mesh), options, config, history
                       (see :mod:`lrm_jax.fit.common`)
  DIR/views.png        held-out views: targets (top row) | renders (bottom row)
  DIR/mesh.obj, .glb   marching cubes of the density, decoder vertex colours
  DIR/turntable.mp4    (or .gif) a turn around the object at the mean training camera
                       distance and field of view
  DIR/triplane.npz     planes and decoder parameters (:func:`load_triplane`)

Chamfer distance (``chamfer``): ``n`` points are sampled uniformly (by area) on each surface;
with ``d(p, Q)`` the distance of ``p`` to the nearest sample of ``Q`` (scipy ``cKDTree``),
``chamfer = (mean_p d(p, Q) + mean_q d(q, P)) / 2`` -- a symmetric mean nearest-neighbour
distance (not squared), in the units of the normalised object frame of the source (objects in
``[-1, 1]^3``). The reference ``.obj`` is normalised exactly as the mesh source normalises
the views' mesh (up axis to +z, same box and radius).
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

from lrm_jax import cameras as cam
from lrm_jax.fit import common
from lrm_jax.io import mesh as mesh_io
from lrm_jax.render import triplane as tp

PROG = "python -m lrm_jax.fit.triplane"
DEFAULT_STEPS = 2000
TRAIN_VIEWS_SCORED = 4  # train_psnr: rendering every training view would cost a fit's time
Config = ml_collections.ConfigDict

# (key, default, help) of every hyperparameter, overridable with --config.KEY=VALUE.
# The defaults reach the cow bar on a 2-core CPU.
HYPERPARAMETERS = (
    ("plane_size", 96, "texels per side of each plane"),
    ("plane_channels", 24, "feature channels per plane"),
    ("plane_init_std", 0.01, "standard deviation of the planes' random init"),
    ("hidden", 64, "width of the decoder MLP"),
    ("num_coarse", 32, "stratified samples per ray in training"),
    ("num_fine", 32, "importance samples per ray in training"),
    ("eval_coarse", 48, "stratified samples per ray in scored and exported renders"),
    ("eval_fine", 48, "importance samples per ray in scored and exported renders"),
    ("rays_per_step", 2048, "random rays per step"),
    ("plane_lr", 2e-2, "peak learning rate of the planes"),
    ("decoder_lr", 2e-3, "peak learning rate of the decoder"),
    ("warmup", 50, "steps of linear learning-rate warmup"),
    # 2e-3 with LRM's total variation (half the sum of the two mean squared differences)
    # is the weight 1e-3 this fit used with the plain sum.
    ("tv_weight", 2e-3, "weight of the planes' total variation (LRM's definition)"),
    ("mask_weight", 0.1, "weight of the squared opacity error against informative masks"),
    ("seed", 0, "seed of the init, the ray batches and the samples"),
)

flags.DEFINE_integer("mesh_resolution", 256, "marching-cubes grid per side (0: no mesh)",
                     lower_bound=0)
flags.DEFINE_float("mesh_threshold", 10.0, "density level of the exported surface")
flags.DEFINE_string("reference_mesh", "", ".obj to report the mesh's Chamfer distance to")
EXTRA_FLAGS = ("mesh_resolution", "mesh_threshold", "reference_mesh")

__doc__ += common.describe_config(HYPERPARAMETERS)
flags.adopt_module_key_flags(common)


def default_config() -> Config:
  """The hyperparameters' defaults (:data:`HYPERPARAMETERS`)."""
  return common.config_from_table(HYPERPARAMETERS)


# ----------------------------------------------------------------------------------------
# Rays, model, loss, step.
# ----------------------------------------------------------------------------------------


def training_rays(views: dict) -> dict[str, np.ndarray]:
  """Flat arrays of the rays of ``views`` that hit the object box (the rest see only the
  background). Returns ``origins, dirs, rgb [N, 3]`` and ``mask [N, 1]``."""
  h, w = views["images"].shape[1:3]
  o, d = cam.get_rays(views["c2w"], views["intrinsics"], h, w)  # [V, H, W, 3]
  o, d = o.reshape(-1, 3), d.reshape(-1, 3)
  _, _, hit = tp.ray_box_intersect(jnp.asarray(o), jnp.asarray(d))
  keep = np.asarray(hit)
  return {"origins": o[keep], "dirs": d[keep],
          "rgb": views["images"].reshape(-1, 3)[keep],
          "mask": views["masks"].reshape(-1, 1)[keep]}


def init_params(config: Config, key) -> tuple[tp.TriplaneDecoder, dict]:
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


def make_train_step(decoder, optimizer, config: Config, background, use_mask: bool):
  """A jitted ``(params, opt_state, rays, step, progress) -> (params, opt_state, metrics)``.

  ``rays`` is the :func:`training_rays` dict (device arrays); each step draws a random
  batch of ``config.rays_per_step`` of them.
  """
  render_config = tp.RenderConfig(num_coarse=config.num_coarse, num_fine=config.num_fine,
                                  chunk=config.rays_per_step)
  root = jax.random.key(config.seed + 1)
  bg = jnp.asarray(background, jnp.float32)  # [3]
  mask_weight = config.mask_weight if use_mask else 0.0

  def loss_fn(params, batch, key):
    out = tp.render_rays(decoder.apply, params["decoder"], params["planes"],
                         batch["origins"], batch["dirs"], render_config, key, bg)
    mse = jnp.mean(jnp.square(out["rgb"] - batch["rgb"]))
    mask = jnp.mean(jnp.square(out["alpha"] - batch["mask"]))
    tv = tp.total_variation(params["planes"])
    loss = mse + mask_weight * mask + config.tv_weight * tv
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


def fit(train: dict, config: Config, background, steps: int, time_limit_s: float,
        log_every: int = 50, progress_bar: bool = True, log=print):
  """Optimises a triplane to the ``train`` views (:func:`lrm_jax.fit.common.optimise`).

  Returns ``(decoder, params, info)``: the optimiser's info plus ``num_train_rays`` and
  ``mask_loss``.
  """
  rays = jax.tree.map(jnp.asarray, training_rays(train))
  use_mask = common.masks_are_informative(train["masks"]) and config.mask_weight > 0
  decoder, params = init_params(config, jax.random.key(config.seed))
  optimizer = make_optimizer()
  step_fn = make_train_step(decoder, optimizer, config, background, use_mask)
  state = {"params": params, "opt_state": optimizer.init(params)}

  def step(i: int, progress: float) -> dict:
    state["params"], state["opt_state"], aux = step_fn(state["params"], state["opt_state"],
                                                       rays, i, progress)
    return aux

  info = common.optimise(step, steps, time_limit_s, log_every, progress_bar, log)
  info.update(num_train_rays=int(rays["origins"].shape[0]), mask_loss=use_mask)
  return decoder, state["params"], info


# ----------------------------------------------------------------------------------------
# Rendering, mesh, Chamfer distance, saving.
# ----------------------------------------------------------------------------------------


def render_views(decoder, params, c2w, intrinsics, height, width, config: Config,
                 background=1.0, chunk: int = 8192) -> dict[str, np.ndarray]:
  """Deterministic renders ``[V, H, W, ...]`` of the fitted triplane."""
  render_config = tp.RenderConfig(num_coarse=config.eval_coarse, num_fine=config.eval_fine,
                                  chunk=chunk)
  cameras = cam.Cameras(jnp.asarray(c2w)[None], jnp.asarray(intrinsics)[None], height, width)
  out = tp.render_triplane(decoder.apply, params["decoder"], params["planes"][None], cameras,
                           render_config, None, jnp.asarray(background, jnp.float32))
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


def export_and_compare(options, decoder, params, source, log=print) -> dict[str, Any]:
  """Writes the mesh; with ``--reference_mesh``, its Chamfer distance. Summary entries."""
  t0 = time.perf_counter()
  try:
    field = tp.mesh_field(params["planes"], decoder.apply, params["decoder"],
                          resolution=options.mesh_resolution, threshold=options.mesh_threshold)
    mesh = mesh_io.export_field_mesh(field, options.out)
  except ValueError as e:  # no surface at this threshold: report it, keep the other outputs
    log(f"mesh export skipped: {e}")
    return {"mesh": {"error": str(e)}}
  out = {"mesh": {"resolution": options.mesh_resolution, "threshold": mesh["mesh_threshold"],
                  "num_vertices": mesh["mesh_vertices"], "num_faces": mesh["mesh_faces"],
                  "wall_s": time.perf_counter() - t0}}
  if options.reference_mesh:
    import trimesh
    pred = trimesh.load(mesh["mesh_obj"], force="mesh", process=False)
    ref_v, ref_f = reference_mesh(options.reference_mesh, source)
    out["chamfer"] = chamfer_distance(pred.vertices, pred.faces, ref_v, ref_f)
    out["chamfer"]["reference"] = os.path.abspath(options.reference_mesh)
  return out


def save_triplane(path: str, params: dict, config: Config) -> str:
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


def run(options, config: Config, log=print) -> dict[str, Any]:
  """Loads the views, fits, scores and exports; returns the summary.

  ``options``: the flags (:func:`lrm_jax.fit.common.options_from_flags` with
  :data:`EXTRA_FLAGS`); ``config``: the hyperparameters (:func:`default_config` with
  overrides).
  """
  scene = common.load_scene(options)
  decoder, params, info = fit(scene.train, config, scene.background, options.steps,
                              options.time_limit_s, options.log_every, options.progress,
                              log)

  def render(c2w, intrinsics):
    return render_views(decoder, params, c2w, intrinsics, scene.height, scene.width, config,
                        scene.background)

  entries = common.evaluate(options, scene, render, num_train_scored=TRAIN_VIEWS_SCORED)
  save_triplane(os.path.join(options.out, "triplane.npz"), params, config)
  entries.update(num_train_rays=info.pop("num_train_rays"), mask_loss=info.pop("mask_loss"))
  if options.mesh_resolution > 0:
    entries.update(export_and_compare(options, decoder, params, scene.source, log))
  return common.write_summary(options, config, scene, info, entries, log)


def parse_command_line(argv) -> tuple[Config, Config]:
  """``(options, config)`` of ``argv`` (no program name) as the command parses it."""
  return common.parse_command_line(argv, default_config(), DEFAULT_STEPS, EXTRA_FLAGS, PROG)


def main(argv=None) -> None:
  """The command (``argv`` without the program name; default ``sys.argv``)."""
  common.main(PROG, run, default_config(), DEFAULT_STEPS, EXTRA_FLAGS, argv=argv)


if __name__ == "__main__":
  main()

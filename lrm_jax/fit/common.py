"""What every per-scene fit shares: flags, views, the held-out split, the budgeted loop,
scoring of the held-out views and the outputs.

Both commands take the same absl flags for paths, data and budgets (defined here once), and
their own optimisation hyperparameters as an ``ml_collections.ConfigDict`` of defaults,
overridden with ``--config.KEY=VALUE`` through :mod:`lrm_jax.config_loading` (values typed
by the default, strict booleans, an unknown key raises :class:`~lrm_jax.errors.ConfigError`
naming the nearest key). A fit:

  1. loads scene ``--scene_index`` of the source ``--input`` (:func:`load_views`) and holds
     out ``--num_held_out`` evenly spaced views (:func:`split_views`);
  2. optimises on the other views for at most ``--steps`` steps and ``--time_limit_s``
     seconds (:func:`optimise`);
  3. scores renders of the held-out views with :mod:`lrm_jax.train.metrics`
     (:func:`evaluate`) and writes ``views.png``, ``turntable.mp4`` and ``summary.json``
     (:func:`write_summary`) next to the command's own outputs.

``summary.json`` uses the keys of the trainer's ``eval`` block where they mean the same
thing: ``psnr`` (mean over held-out views of each view's PSNR), ``ssim``, ``num_views``
(held-out views scored), ``baseline_psnr`` (the better of the background alone and the
nearest training view as is, ``baseline_background_psnr`` / ``baseline_nearest_view_psnr``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from lrm_jax import cameras as cam
from lrm_jax import cli, config_loading
from lrm_jax.errors import DataError
from lrm_jax.io import images as images_io
from lrm_jax.io import video
from lrm_jax.train import metrics

FLAGS = flags.FLAGS
UP_AXES = ("x", "y", "z", "-x", "-y", "-z")

# Flags of both commands; each command sets the default of --steps.
flags.DEFINE_string("input", None, "the scene's views, a source spec: mesh:PATH.obj, "
                    "folder:DIR, synthetic or tfds:NAME[:DATA_DIR] (required)")
flags.DEFINE_string("out", None, "output folder (required)")
flags.DEFINE_integer("num_views", 32, "views rendered (mesh:, synthetic) or kept evenly "
                     "spaced (folder:, tfds:; 0: all)", lower_bound=0)
flags.DEFINE_integer("resolution", 128, "view size in pixels the source renders or loads at",
                     lower_bound=8)
flags.DEFINE_integer("num_held_out", 4, "evenly spaced views kept out of the fit and scored",
                     lower_bound=1)
flags.DEFINE_integer("scene_index", 0, "which scene of the source", lower_bound=0)
flags.DEFINE_enum("up_axis", "y", UP_AXES, "up axis of a mesh: source's .obj file (the world "
                  "is z-up)")
flags.DEFINE_string("background", "1,1,1", "r,g,b in [0, 1] (one number: grey), the "
                    "background of the views and of the renders")
flags.DEFINE_integer("data_seed", 0, "seed of the source (the cameras of mesh:, synthetic)")
flags.DEFINE_integer("steps", None, "optimisation steps at most", lower_bound=1)
flags.DEFINE_float("time_limit_s", 600.0, "stop optimising after this many seconds, compile "
                   "included (<= 0: no limit, and a schedule reproducible bit for bit)")
flags.DEFINE_integer("log_every", 50, "steps between history entries (and log lines with "
                     "--noprogress)", lower_bound=1)
flags.DEFINE_integer("turntable_frames", 36, "frames of turntable.mp4 (0: no video)",
                     lower_bound=0)
flags.DEFINE_bool("progress", True, "a progress bar on stderr (--noprogress: log lines)")

COMMON_FLAGS = ("input", "out", "num_views", "resolution", "num_held_out", "scene_index",
                "up_axis", "background", "data_seed", "steps", "time_limit_s", "log_every",
                "turntable_frames", "progress")


# ----------------------------------------------------------------------------------------
# Command line: flags, hyperparameters, the command's main.
# ----------------------------------------------------------------------------------------


def parse_background(text: str) -> tuple[float, float, float]:
  """``"1,1,1"`` -> ``(1.0, 1.0, 1.0)`` (one value is grey); ValueError naming the flag."""
  try:
    values = [float(x) for x in text.split(",")]
  except ValueError:
    raise ValueError(f"--background must be r,g,b numbers in [0, 1], got {text!r}.") from None
  if len(values) == 1:
    values = values * 3
  if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
    raise ValueError(f"--background must be r,g,b numbers in [0, 1], got {text!r}.")
  return tuple(values)


def _background_is_valid(text: str) -> bool:
  try:
    parse_background(text)
  except ValueError:
    return False
  return True


flags.register_validator("background", _background_is_valid,
                         "must be r,g,b numbers in [0, 1] (or one number: grey)")


def config_from_table(table: Sequence[tuple[str, Any, str]]) -> ml_collections.ConfigDict:
  """A ConfigDict of defaults from ``(key, default, help)`` rows."""
  return ml_collections.ConfigDict({key: default for key, default, _ in table})


def describe_config(table: Sequence[tuple[str, Any, str]]) -> str:
  """The hyperparameters' part of a command's ``--help``: one line per key."""
  width = max(len(f"{k}={v!r}") for k, v, _ in table)
  lines = [textwrap.fill(text, 88, initial_indent=f"  {f'{k}={v!r}':<{width}}  ",
                         subsequent_indent=" " * (width + 4))
           for k, v, text in table]
  return ("\nHyperparameters (defaults shown; override with --config.KEY=VALUE):\n"
          + "\n".join(lines) + "\n")


def config_with_overrides(defaults: ml_collections.ConfigDict,
                          overrides: Sequence[str] | None = None) -> ml_collections.ConfigDict:
  """``defaults`` with ``["key=value", ...]`` applied (default: this command line's
  ``--config.`` overrides), locked. Raises ConfigError naming an unknown key or bad value."""
  config = ml_collections.ConfigDict(defaults.to_dict())
  config_loading.apply_overrides(
      config, config_loading.config_overrides() if overrides is None else overrides)
  config.lock()
  return config


def options_from_flags(extra: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The parsed flags :data:`COMMON_FLAGS` plus ``extra`` as a ConfigDict."""
  for name in ("input", "out"):
    if not FLAGS[name].value:
      raise app.UsageError(f"--{name} is required.")
  return ml_collections.ConfigDict({n: FLAGS[n].value for n in (*COMMON_FLAGS, *extra)})


def _flags_parser(argv: list[str]) -> list[str]:
  """:func:`config_loading.flags_parser`, refusing a ``--config`` file (only overrides)."""
  _, spec, _ = config_loading.split_config_args(list(argv))
  if spec is not None:
    raise flags.Error(f"--config={spec}: fit commands take no config file; set "
                      "hyperparameters with --config.KEY=VALUE (see --help).")
  rest = config_loading.flags_parser(argv)
  if len(rest) > 1:
    raise flags.Error(f"unexpected arguments {rest[1:]} (flags are --name=value).")
  return rest


def parse_command_line(argv: Sequence[str], defaults: ml_collections.ConfigDict, steps: int,
                       extra_flags: Sequence[str] = (), prog: str = "fit"):
  """``(options, config)`` of ``argv`` (no program name) exactly as the command parses it.

  For scripts and tests: flags not in ``argv`` take their defaults (``--steps``:
  ``steps``); the hyperparameters are ``defaults`` with the ``--config.`` overrides.
  """
  FLAGS.unparse_flags()
  FLAGS.set_default("steps", steps)
  _flags_parser([prog, *argv])
  return options_from_flags(extra_flags), config_with_overrides(defaults)


def main(prog: str, run: Callable, defaults: ml_collections.ConfigDict, steps: int,
         extra_flags: Sequence[str] = (), argv: Sequence[str] | None = None) -> None:
  """Runs a fit command: ``run(options, config)`` on ``argv`` (default ``sys.argv``).

  A :class:`ConfigError` or :class:`DataError` (a wrong key or value, unusable input)
  prints one line naming it and exits with status 2; anything else keeps its traceback.
  """
  FLAGS.unparse_flags()  # flags not on this command line take their defaults
  FLAGS.set_default("steps", steps)

  def app_main(_):
    try:
      run(options_from_flags(extra_flags), config_with_overrides(defaults))
    except cli.USER_ERRORS as e:
      if FLAGS.debug:
        raise
      print(f"{prog}: error: {e}", file=sys.stderr)
      sys.exit(2)

  def parse_or_exit(args: list[str]) -> list[str]:
    try:
      return _flags_parser(args)
    except flags.Error as e:  # a bad flag: one line, as absl's own parser prints it
      print(f"{prog}: error: {e}\nPass --help to see the flags and hyperparameters.",
            file=sys.stderr)
      sys.exit(2)

  app.run(app_main, argv=None if argv is None else [prog, *argv], flags_parser=parse_or_exit)


# ----------------------------------------------------------------------------------------
# Views and the held-out split.
# ----------------------------------------------------------------------------------------


def load_views(spec: str, num_views: int = 32, resolution: int = 128, scene_index: int = 0,
               up_axis: str = "y", background=(1.0, 1.0, 1.0),
               data_seed: int = 0) -> tuple[dict, Any]:
  """``(example, source)``: scene ``scene_index`` of the source ``spec``.

  Rendering sources (``mesh:``, ``synthetic``) render ``num_views`` views at
  ``resolution``; sources of stored views (``folder:``, ``tfds:``) give what they hold at
  ``resolution``, of which ``num_views`` evenly spaced views are kept when there are more
  (0: all). ``example`` holds numpy ``images [V, H, W, 3]``, ``masks [V, H, W, 1]`` (all
  ones when the source has none), ``c2w [V, 4, 4]`` and ``intrinsics [V, 4]``. Raises
  :class:`DataError` naming the spec for anything the source rejects.
  """
  from lrm_jax import config_defaults
  from lrm_jax.data import sources

  d = config_defaults.data_config()
  d.source = spec
  d.render_size = int(resolution)
  d.views_per_scene = int(num_views)
  d.up_axis = up_axis
  d.background = tuple(float(c) for c in background)
  try:
    source = sources.make_source(spec, d, "train", data_seed)
    n = len(source)
    if not 0 <= scene_index < n:
      raise ValueError(f"--scene_index={scene_index} is out of range: the source has {n} "
                       "scene(s).")
    example = dict(source[scene_index])
  except (ValueError, FileNotFoundError, KeyError, OSError) as e:
    raise DataError(f"--input={spec!r}: {e}") from e
  v = example["images"].shape[0]
  if num_views > 0 and v > num_views:
    example = _pick(example, np.round(np.linspace(0, v - 1, num_views)).astype(int), v)
  if example["images"].shape[0] < 2:
    raise DataError(f"--input={spec!r}: need at least 2 views to fit and hold out, got "
                    f"{example['images'].shape[0]}.")
  out = {k: np.asarray(example[k], np.float32) for k in ("images", "c2w", "intrinsics")}
  masks = example.get("masks")
  out["masks"] = (np.ones(out["images"].shape[:-1] + (1,), np.float32) if masks is None
                  else np.asarray(masks, np.float32))
  return out, source


def _pick(example: dict, idx: np.ndarray, num_views: int) -> dict:
  """The views ``idx`` of every per-view entry (leading dimension ``num_views``)."""
  return {k: (x[idx] if np.ndim(x) and np.shape(x)[0] == num_views else x)
          for k, x in example.items()}


def held_out_indices(num_views: int, num_held_out: int) -> np.ndarray:
  """``num_held_out`` view indices ``num_views // num_held_out`` apart, from view 0.

  Clamped so that at least one view is held out and at least one is kept.
  """
  num_held_out = max(1, min(num_held_out, num_views - 1))
  return np.arange(num_held_out) * (num_views // num_held_out)


def split_views(example: dict, num_held_out: int) -> tuple[dict, dict, np.ndarray]:
  """``(train, held, held_out)``: the views of ``example`` kept for fitting, the
  :func:`held_out_indices` views, and those indices (both in the original view order)."""
  v = example["images"].shape[0]
  held_out = held_out_indices(v, num_held_out)
  held = np.zeros(v, bool)
  held[held_out] = True
  return _pick(example, np.flatnonzero(~held), v), _pick(example, held_out, v), held_out


def masks_are_informative(masks: np.ndarray) -> bool:
  """Whether the masks separate an object from a background (not all foreground)."""
  return bool(np.any(masks < 0.5)) and bool(np.any(masks > 0.5))


class Scene(NamedTuple):
  """One scene ready to fit: numpy example dicts of the training and held-out views."""

  train: dict  # images [Vt, H, W, 3], masks [Vt, H, W, 1], c2w [Vt, 4, 4], intrinsics [Vt, 4]
  held: dict  # the same for the held-out views [Vh, ...]
  held_out: np.ndarray  # [Vh] indices of the held-out views among the loaded ones
  source: Any  # the data source (a mesh source knows its mesh)
  background: tuple[float, float, float]
  height: int
  width: int
  t_start: float  # time.perf_counter() when loading began (total_wall_s counts from it)
  load_avg_start: tuple[float, float, float]  # os.getloadavg() then


def load_scene(options) -> Scene:
  """Loads and splits the views the flags ``options`` name; creates ``options.out``."""
  t_start, load_avg_start = time.perf_counter(), os.getloadavg()
  background = parse_background(options.background)
  example, source = load_views(options.input, options.num_views, options.resolution,
                               options.scene_index, options.up_axis, background,
                               options.data_seed)
  train, held, held_out = split_views(example, options.num_held_out)
  os.makedirs(options.out, exist_ok=True)
  h, w = example["images"].shape[1:3]
  return Scene(train, held, held_out, source, background, int(h), int(w), t_start,
               load_avg_start)


# ----------------------------------------------------------------------------------------
# The budgeted loop.
# ----------------------------------------------------------------------------------------


def optimise(step: Callable[[int, float], dict], steps: int, time_limit_s: float,
             log_every: int = 50, progress_bar: bool = True, log=print) -> dict[str, Any]:
  """Calls ``step(i, progress)`` for ``i = 0, 1, ...`` within the step and time budget.

  ``progress`` in [0, 1] is the larger of the step and the wall-clock fractions of the
  budget, so a schedule driven by it anneals fully whichever budget ends the fit; with
  ``time_limit_s <= 0`` only steps count and the schedule is reproducible. Step 0 (which
  compiles) always runs with progress 0. ``step`` returns a dict of scalars with the
  batch ``mse``; it is fetched every step, which blocks, so the clock and the schedule
  stay honest.

  Returns ``steps``, ``wall_s``, ``cpu_s``, ``compile_s`` (step 0), ``steps_per_s``
  (after step 0) and ``history``: every ``log_every`` steps and at the end, the step, the
  PSNR of the mean ``mse`` since the last entry, the wall time and the step's scalars.
  """
  limit = time_limit_s if time_limit_s > 0 else math.inf
  bar = None
  if progress_bar:
    from tqdm import tqdm
    bar = tqdm(total=steps, unit="step", dynamic_ncols=True, mininterval=1.0,
               file=sys.stderr)
  t0, cpu0 = time.perf_counter(), time.process_time()
  compile_s, history, window, i, aux = 0.0, [], [], 0, {}
  while i < steps:
    elapsed = time.perf_counter() - t0
    if i > 0 and elapsed >= limit:
      break
    progress = 0.0 if i == 0 else max(i / steps, elapsed / limit)
    aux = {k: float(v) for k, v in jax.device_get(step(i, progress)).items()}
    i += 1
    if i == 1:
      compile_s = time.perf_counter() - t0
    window.append(aux["mse"])
    if bar is not None:
      bar.update(1)
    if i % log_every == 0 or i == steps:
      history.append(_history_entry(i, window, aux, t0, bar, log))
      window = []
  if window:  # stopped by the clock between entries
    history.append(_history_entry(i, window, aux, t0, bar, log))
  if bar is not None:
    bar.close()
  wall = time.perf_counter() - t0
  return {"steps": i, "wall_s": wall, "cpu_s": time.process_time() - cpu0,
          "compile_s": compile_s, "steps_per_s": (i - 1) / max(wall - compile_s, 1e-9),
          "history": history}


def _history_entry(i: int, window: list[float], aux: dict, t0: float, bar, log) -> dict:
  """One history entry; shown on the progress bar, or logged without one."""
  entry = {"step": i, "psnr": float(metrics.psnr_from_mse(np.mean(window))),
           "wall_s": time.perf_counter() - t0, **aux}
  if bar is not None:
    bar.set_postfix(psnr=f"{entry['psnr']:.2f}", loss=f"{aux.get('loss', aux['mse']):.4f}",
                    refresh=False)
  else:
    log(f"step {i:5d}  loss {aux.get('loss', aux['mse']):.5f}  train psnr "
        f"{entry['psnr']:.2f}  {entry['wall_s']:.0f}s")
  return entry


# ----------------------------------------------------------------------------------------
# Scoring and outputs.
# ----------------------------------------------------------------------------------------

# render(c2w [V, 4, 4], intrinsics [V, 4]) -> {"rgb": [V, H, W, 3], ...} (numpy), at the
# scene's height and width over its background.
Render = Callable[[np.ndarray, np.ndarray], dict]


def score(render: Render, views: dict, with_ssim: bool = True) -> tuple[dict, dict]:
  """``(scores, renders)`` of ``views``: mean and per-view PSNR (and SSIM) of the renders,
  clipped to [0, 1] as the trainer's evaluation does, against the views' images."""
  out = render(views["c2w"], views["intrinsics"])
  pred = jnp.clip(jnp.asarray(out["rgb"], jnp.float32), 0.0, 1.0)
  target = jnp.asarray(views["images"])
  psnr = np.asarray(metrics.psnr(pred, target), np.float64)  # [V]
  scores = {"psnr": float(psnr.mean()), "psnr_per_view": psnr.tolist()}
  if with_ssim:
    ssim = np.asarray(metrics.ssim(pred, target), np.float64)  # [V]
    scores.update(ssim=float(ssim.mean()), ssim_per_view=ssim.tolist())
  return scores, out


def baselines(scene: Scene) -> dict[str, float]:
  """PSNR of the held-out views' trivial predictions, as the trainer's ``eval`` block:
  the background alone, the nearest training view as is, and the better of the two."""
  from lrm_jax.train import evaluation

  add_batch = lambda views: {k: v[None] for k, v in views.items()}  # [1, V, ...]
  mse = evaluation.baselines(add_batch(scene.train), add_batch(scene.held), scene.background)
  psnr = {k: float(np.mean(metrics.psnr_from_mse(v))) for k, v in mse.items()}
  return {"baseline_psnr": max(psnr.values()),
          "baseline_background_psnr": psnr["background"],
          "baseline_nearest_view_psnr": psnr["nearest_view"]}


def turntable_path(c2w: np.ndarray, intrinsics: np.ndarray, frames: int, height: int,
                   width: int, elevation_deg: float = 20.0):
  """``(c2w [F, 4, 4], intrinsics [F, 4])``: a turn around the world origin (z up) at the
  mean distance and with the mean horizontal field of view of the cameras ``c2w``."""
  radius = float(np.mean(np.linalg.norm(c2w[:, :3, 3], axis=-1)))
  fov = float(np.mean(2.0 * np.arctan(0.5 * width / intrinsics[:, 0])))
  path = cam.turntable_cameras(frames, elevation_deg=elevation_deg, radius=radius)
  k = np.broadcast_to(cam.intrinsics_from_fov(fov, height, width), (frames, 4))
  return np.asarray(path, np.float32), np.asarray(k, np.float32)


def evaluate(options, scene: Scene, render: Render,
             num_train_scored: int | None = None) -> dict[str, Any]:
  """Scores the held-out views, writes ``views.png`` and the turntable; summary entries.

  ``views.png``: held-out targets (top row) and renders (bottom row). ``train_psnr`` is
  the PSNR of the first ``num_train_scored`` training views (all when None). The
  turntable (``options.turntable_frames`` frames, ``turntable.mp4`` or ``.gif``) follows
  :func:`turntable_path` of the training cameras.
  """
  held, held_out = score(render, scene.held)
  train_views = scene.train
  if num_train_scored is not None:
    train_views = {k: v[:num_train_scored] for k, v in train_views.items()}
  train, _ = score(render, train_views, with_ssim=False)
  images_io.save_png(os.path.join(options.out, "views.png"), images_io.grid(
      [list(scene.held["images"]), list(np.clip(held_out["rgb"], 0.0, 1.0))]))
  turntable = None
  if options.turntable_frames > 0:
    c2w, k = turntable_path(scene.train["c2w"], scene.train["intrinsics"],
                            options.turntable_frames, scene.height, scene.width)
    turntable = video.write_video(os.path.join(options.out, "turntable.mp4"),
                                  np.clip(render(c2w, k)["rgb"], 0.0, 1.0), fps=12)
  return {"psnr": held["psnr"], "ssim": held["ssim"], "num_views": len(scene.held_out),
          **baselines(scene), "train_psnr": train["psnr"],
          "psnr_per_view": held["psnr_per_view"], "ssim_per_view": held["ssim_per_view"],
          "turntable": turntable}


def write_summary(options, config, scene: Scene, fit_info: dict, entries: dict,
                  log=print) -> dict[str, Any]:
  """Writes ``options.out/summary.json`` and logs its short form; returns the summary.

  ``entries``: :func:`evaluate`'s and the command's own; ``fit_info``: :func:`optimise`'s.
  """
  info = dict(fit_info)
  history = info.pop("history")
  summary = {**entries, **info,
             "input": options.input, "scene_index": options.scene_index,
             "num_train_views": int(scene.train["images"].shape[0]),
             "held_out_views": scene.held_out.tolist(),
             "resolution": [scene.height, scene.width], "background": list(scene.background),
             "load_avg_start": list(scene.load_avg_start),
             "load_avg_end": list(os.getloadavg()),
             "total_wall_s": time.perf_counter() - scene.t_start,
             "options": options.to_dict(), "config": config.to_dict(), "history": history}
  with open(os.path.join(options.out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  long = ("history", "config", "options", "psnr_per_view", "ssim_per_view")
  log(json.dumps({k: v for k, v in summary.items() if k not in long}, indent=2))
  return summary

"""What the viewer shows, as plain numpy: Gaussians, a mesh, a turntable and cameras.

:func:`from_ply` reads a 3DGS ``.ply``; :func:`from_workdir` reconstructs one scene with a
trained run (a held-out scene by default, or ``--input``) through
:func:`lrm_jax.reconstruct.reconstruct_inputs`, and keeps the input and target cameras and
images. :func:`splat_arrays` turns Gaussians into what a splat renderer draws (centres,
covariances, colours at a chosen SH degree, opacities above a threshold).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from lrm_jax.errors import DataError
from lrm_jax.io import mesh as mesh_io
from lrm_jax.io import ply
from lrm_jax.representations import gaussians as gs
from lrm_jax.representations import sh as sh_lib


@dataclasses.dataclass
class View:
  """One camera to draw as a frustum (OpenCV ``c2w``, pixel ``intrinsics``)."""

  name: str
  role: str  # "input" | "target"
  c2w: np.ndarray  # [4, 4]
  intrinsics: np.ndarray  # [4] fx, fy, cx, cy
  height: int
  width: int
  image: np.ndarray | None = None  # [H, W, 3] float in [0, 1]

  @property
  def fov_y(self) -> float:
    """Vertical field of view (radians)."""
    return float(2.0 * np.arctan(0.5 * self.height / self.intrinsics[1]))

  @property
  def aspect(self) -> float:
    return self.width / self.height


@dataclasses.dataclass
class SceneContents:
  """Everything the viewer puts in its scene; any part may be missing."""

  title: str
  gaussians: gs.Gaussians | None = None  # numpy, unbatched [N]
  mesh_path: str | None = None  # .glb or .obj
  turntable_path: str | None = None  # .mp4 or .gif
  views: list[View] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)


def from_ply(path: str) -> SceneContents:
  """The Gaussians of a 3DGS ``.ply`` (``DataError`` naming the file if it is not one)."""
  return SceneContents(title=os.path.basename(path), gaussians=ply.load_ply(path))


def splat_arrays(g: gs.Gaussians, sh_degree: int = -1, min_opacity: float = 0.0,
                 eye: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Arrays of a splat renderer for Gaussians ``[N]`` with opacity ``> min_opacity``.

  Returns ``{centers [M, 3], covariances [M, 3, 3], rgbs [M, 3] in [0, 1], opacities
  [M, 1]}``. Colours use the SH coefficients up to ``sh_degree`` (``-1``: all the
  Gaussians have), seen from ``eye [3]`` (a camera position; without one, or at degree 0,
  the view-independent colour).
  """
  keep = np.asarray(g.opacities)[:, 0] > min_opacity
  means = np.asarray(g.means, np.float32)[keep]
  sh = np.asarray(g.sh, np.float32)[keep]
  have = sh_lib.sh_degree(sh.shape[1])
  degree = have if sh_degree < 0 else min(sh_degree, have)
  if degree == 0 or eye is None:
    rgb = np.asarray(sh_lib.sh_to_rgb(sh[:, 0]))
  else:
    sh = sh[:, :sh_lib.num_sh_bases(degree)]
    rgb = np.asarray(sh_lib.eval_sh(sh, means - np.asarray(eye, np.float32)[None]))
  cov = np.asarray(gs.covariance(np.asarray(g.quats, np.float32)[keep],
                                 np.asarray(g.scales, np.float32)[keep]))
  return {"centers": means, "covariances": cov.astype(np.float32),
          "rgbs": np.clip(rgb, 0.0, 1.0).astype(np.float32),
          "opacities": np.asarray(g.opacities, np.float32)[keep]}


def bounds(contents: SceneContents) -> tuple[np.ndarray, float]:
  """``(centre [3], radius)`` of what is shown: the Gaussians (the 2nd..98th percentile
  of opaque ones), else the mesh, else the cameras, else the unit object box."""
  g = contents.gaussians
  if g is not None and g.num:
    pts = np.asarray(g.means)[np.asarray(g.opacities)[:, 0] > 0.1]
    pts = pts if len(pts) else np.asarray(g.means)
    lo, hi = np.percentile(pts, 2, axis=0), np.percentile(pts, 98, axis=0)
  elif contents.mesh_path:
    pts = mesh_vertices(contents.mesh_path)
    lo, hi = pts.min(0), pts.max(0)
  elif contents.views:
    pts = np.stack([v.c2w[:3, 3] for v in contents.views])
    lo, hi = pts.min(0), pts.max(0)
  else:
    lo, hi = -np.ones(3), np.ones(3)
  return (lo + hi) / 2, max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)


def mesh_to_world(path: str) -> np.ndarray:
  """The rotation ``[3, 3]`` from a mesh file's frame to our z-up world: glTF (``.glb``) is
  y-up (``io/mesh.write_glb`` rotates into it), ``.obj`` files are ours, z-up."""
  return mesh_io.Z_UP_TO_Y_UP.T if path.endswith(".glb") else np.eye(3, dtype=np.float32)


def mesh_vertices(path: str) -> np.ndarray:
  """A mesh file's vertices ``[N, 3]`` in world coordinates."""
  import trimesh  # pylint: disable=g-import-not-at-top
  v = np.asarray(trimesh.load(path, force="mesh").vertices, np.float32)
  return v @ mesh_to_world(path).T


def views_of(part: dict, role: str) -> list[View]:
  """Frustums of one scene's ``inputs`` or ``targets`` (``{images [V, H, W, 3], c2w,
  intrinsics}``)."""
  images = np.asarray(part["images"])
  return [View(f"{role}_{i}", role, np.asarray(part["c2w"][i], np.float64),
               np.asarray(part["intrinsics"][i], np.float64), images.shape[1], images.shape[2],
               np.clip(images[i], 0.0, 1.0)) for i in range(images.shape[0])]


def heldout_scene(run, config, index: int = 0) -> tuple[dict, dict]:
  """``(inputs, targets)`` of the ``index``-th held-out (eval split) scene of a run, as the
  evaluation sees it (the run's own view sampling)."""
  from lrm_jax.train import evaluation
  ev = evaluation.Evaluator(config, run.model, run.program.mesh, run.program.rules, None,
                            spec=run.family.batch_spec(config))
  seen = 0
  for batch in ev.batches():
    b = len(batch["scene_id"]) if "scene_id" in batch else batch["inputs"]["images"].shape[0]
    if index < seen + b:
      row = index - seen
      take = lambda part: {k: np.asarray(v)[row] for k, v in part.items()}
      return take(batch["inputs"]), take(batch["targets"])
    seen += b
  raise DataError(f"--scene={index}: the run's held-out split ({config.data.source}) has "
                  f"{seen} scenes in full batches.")


def from_workdir(workdir: str, spec: str | None = None, out: str | None = None,
                 frames: int = 48, scene: int = 0, up_axis: str = "y") -> SceneContents:
  """Reconstructs one scene with the run in ``workdir`` and returns what to show.

  ``spec``: what ``python -m lrm_jax.reconstruct --input`` takes (a posed folder,
  ``mesh:FILE.obj``, an image); ``None``: the ``scene``-th held-out scene of the run,
  with its target cameras and images. The reconstruction's files (``gaussians.ply`` or
  ``mesh.glb``, ``turntable.mp4``, ``views.png``) go to ``out`` (default
  ``workdir/view/<heldout_N or the input's name>``).
  """
  from lrm_jax import reconstruct
  from lrm_jax.train import inference
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir {workdir!r} is not a folder.")
  name = f"heldout_{scene}" if spec is None else os.path.basename(
      os.path.normpath(spec.split(":", 1)[-1])).split(".")[0]
  out = out or os.path.join(workdir, "view", name)
  run = inference.load_trained(workdir)
  config = run.config
  notes = [f"{config.family}-{config.variant}, checkpoint step {run.step}"]
  targets = None
  if spec is None:
    inputs, targets = heldout_scene(run, config, scene)
    notes.append(f"held-out scene {scene} of {config.data.source}")
  elif config.data.get("frame_window"):  # scene-level families reconstruct whole captures
    paths = reconstruct.reconstruct(workdir, spec, out, frames, up_axis=up_axis)
    return _contents(name, paths, [], notes + [f"input {spec} (scene-level; no frustums)"])
  else:
    inputs = reconstruct.load_inputs(spec, config, up_axis, run.family.unposed_inputs)
    notes.append(f"input {spec}")
  paths = reconstruct.reconstruct_inputs(run, config, inputs, out, frames)
  views = views_of(inputs, "input") + (views_of(targets, "target") if targets else [])
  return _contents(name, paths, views, notes)


def _contents(name: str, paths: dict, views: list[View], notes: list[str]) -> SceneContents:
  """A :class:`SceneContents` of ``reconstruct``'s output paths."""
  g = ply.load_ply(paths["gaussians"]) if "gaussians" in paths else None
  notes = notes + [f"files in {os.path.dirname(paths.get('views', paths.get('turntable')))}"]
  video = paths.get("turntable") or paths.get("flythrough")
  return SceneContents(title=name, gaussians=g, mesh_path=paths.get("mesh_glb"),
                       turntable_path=video, views=views, notes=notes)

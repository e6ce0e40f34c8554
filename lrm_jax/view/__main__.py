"""Look at a reconstruction in the browser: a local web viewer built on viser.

  python -m lrm_jax.view --ply=SCENE.ply [--port=8080] [--sh_degree=-1] [--min_opacity=0.005]
  python -m lrm_jax.view --workdir=W [--input=PATH] [--scene=0] [--out=DIR]

``--ply``: the Gaussians of any 3DGS ``.ply``. ``--workdir``: reconstructs one scene with
the trained run (the first held-out scene by default; ``--input`` takes what
``python -m lrm_jax.reconstruct --input`` takes) and shows its Gaussians, or for triplane
and NeRF families its mesh, with the input (blue) and target (orange) cameras as frustums
carrying their images, and the turntable in the side panel. The reconstruction's files are
written to ``--out`` (default ``W/view/<scene>``). Prints the URL and serves until Ctrl-C.
"""

from __future__ import annotations

import signal
import time

from absl import flags, logging

from lrm_jax import cli
from lrm_jax.errors import ConfigError
from lrm_jax.view import scene as scene_lib
from lrm_jax.view import server as server_lib


def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports
  anywhere)."""
  flags.DEFINE_string("ply", None, "a 3DGS .ply to show")
  flags.DEFINE_string("workdir", None, "a training workdir: show a reconstruction by its run")
  flags.DEFINE_string("input", None, "with --workdir: a posed folder, mesh:FILE.obj or an "
                      "image to reconstruct (default: a held-out scene of the run)")
  flags.DEFINE_integer("scene", 0, "with --workdir and no --input: which held-out scene")
  flags.DEFINE_string("out", None, "with --workdir: where the reconstruction's files go "
                      "(default W/view/<scene>)")
  flags.DEFINE_string("up_axis", "y", "with --input=mesh:FILE.obj: the mesh's up axis")
  flags.DEFINE_string("host", "127.0.0.1", "address to serve on (0.0.0.0: every interface)")
  flags.DEFINE_integer("port", 8080, "port to serve on (the next free one if taken)")
  flags.DEFINE_integer("sh_degree", -1, "SH degree of the colours shown (-1: all there are)")
  flags.DEFINE_float("min_opacity", 0.005, "hide Gaussians at or below this opacity")


def load_contents(ply: str | None, workdir: str | None, spec: str | None = None,
                  scene: int = 0, out: str | None = None,
                  up_axis: str = "y") -> scene_lib.SceneContents:
  """The scene of ``--ply`` or of ``--workdir`` (exactly one of them)."""
  if bool(ply) == bool(workdir):
    raise ConfigError("give exactly one of --ply=SCENE.ply or --workdir=W.")
  if ply:
    if spec:
      raise ConfigError("--input goes with --workdir, not --ply.")
    return scene_lib.from_ply(ply)
  return scene_lib.from_workdir(workdir, spec, out, scene=scene, up_axis=up_axis)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  contents = load_contents(f.ply, f.workdir, f.input, f.scene, f.out, f.up_axis)
  viewer = server_lib.Viewer(contents, f.host, f.port, f.sh_degree, f.min_opacity)
  n = contents.gaussians.num if contents.gaussians is not None else 0
  print(f"{contents.title}: {n:,} Gaussians, {len(contents.views)} cameras"
        + (", mesh" if contents.mesh_path else "")
        + (", turntable" if contents.turntable_path else ""))
  print(f"viewer: {viewer.url}  (Ctrl-C to stop)", flush=True)
  # Ctrl-C (and SIGTERM) stop the viewer even when a parent started it with SIGINT ignored
  # (Python then leaves it ignored: background shells, pytest-xdist workers).
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    while True:
      time.sleep(1.0)
  except KeyboardInterrupt:
    pass
  finally:
    viewer.close()


if __name__ == "__main__":
  _define_flags()
  cli.run(main)

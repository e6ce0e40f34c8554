"""The viewer (python -m lrm_jax.view): its scene arrays, and the real thing in Chromium.

The browser test starts the command on a .ply written by our own writer, opens its URL in
headless Chromium (WebGL on SwiftShader), waits for the splats to be drawn, and checks the
screenshot holds the scene's colours where the object is; Ctrl-C ends the command cleanly.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lrm_jax.errors import ConfigError
from lrm_jax.io import ply
from lrm_jax.representations import sh as sh_lib
from lrm_jax.representations.gaussians import Gaussians
from lrm_jax.view import scene as scene_lib
from lrm_jax.view import server as server_lib
from tests import browser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# viser 1.1.1's client logs this itself, with an empty scene too (a helper geometry of its
# own before the first resize); it is not ours to fix.
VISER_OWN_ERRORS = ("THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN",)


def three_blobs(n=600, seed=0) -> Gaussians:
  """Red, green and blue balls of Gaussians along x (SH degree 1: a view-dependent tint),
  plus a ring of nearly transparent ones."""
  rng = np.random.default_rng(seed)
  centres = np.array([[-0.6, 0, 0], [0, 0, 0], [0.6, 0, 0]], np.float32)
  colours = np.eye(3, dtype=np.float32)
  which = np.arange(n) % 3
  means = centres[which] + rng.normal(0, 0.12, (n, 3)).astype(np.float32)
  sh = np.zeros((n, 4, 3), np.float32)
  sh[:, 0] = sh_lib.rgb_to_sh(colours[which])
  sh[:, 1:] = 0.2 * rng.normal(size=(n, 3, 3))
  faint = 60
  ring = np.stack([np.cos(np.linspace(0, 6.28, faint)), np.sin(np.linspace(0, 6.28, faint)),
                   np.zeros(faint)], -1).astype(np.float32)
  quats = rng.normal(size=(n + faint, 4)).astype(np.float32)
  return Gaussians(
      means=np.concatenate([means, ring]),
      scales=np.full((n + faint, 3), 0.05, np.float32),
      quats=quats / np.linalg.norm(quats, axis=-1, keepdims=True),
      opacities=np.concatenate([np.full((n, 1), 0.9), np.full((faint, 1), 0.002)]).astype(
          np.float32),
      sh=np.concatenate([sh, np.zeros((faint, 4, 3), np.float32)]))


def test_splat_arrays_threshold_sh_degree_and_covariance():
  g = three_blobs()
  full = scene_lib.splat_arrays(g, min_opacity=0.0)
  kept = scene_lib.splat_arrays(g, min_opacity=0.005)
  assert len(full["centers"]) == g.num and len(kept["centers"]) == 600
  # Degree 0 (or no eye): the DC colour, whatever the eye; degree 1 depends on the eye.
  dc = np.clip(sh_lib.sh_to_rgb(np.asarray(g.sh)[:600, 0]), 0, 1)
  np.testing.assert_allclose(kept["rgbs"], dc, atol=1e-6)
  deg0 = scene_lib.splat_arrays(g, sh_degree=0, min_opacity=0.005, eye=np.array([0, -3, 0]))
  np.testing.assert_allclose(deg0["rgbs"], dc, atol=1e-6)
  a = scene_lib.splat_arrays(g, sh_degree=1, min_opacity=0.005, eye=np.array([0, -3, 0]))
  b = scene_lib.splat_arrays(g, sh_degree=1, min_opacity=0.005, eye=np.array([0, 3, 0]))
  assert np.abs(a["rgbs"] - b["rgbs"]).max() > 0.05
  # Covariance R S S^T R^T: isotropic scales give s^2 I whatever the rotation.
  np.testing.assert_allclose(kept["covariances"], np.broadcast_to(0.05 ** 2 * np.eye(3),
                                                                  (600, 3, 3)), atol=1e-7)
  assert kept["opacities"].shape == (600, 1)


def test_frustum_pose_is_the_camera_to_world_transform():
  from lrm_jax import cameras as cam
  import viser.transforms as vtf
  c2w = cam.orbit_cameras(np.array([30.0]), np.array([20.0]), 2.3)[0]
  wxyz, position = server_lib.frustum_pose(c2w)
  np.testing.assert_allclose(vtf.SO3(wxyz).as_matrix(), c2w[:3, :3], atol=1e-6)
  np.testing.assert_allclose(position, c2w[:3, 3])


def test_viewer_panel_threshold_hides_and_shows_the_splats():
  contents = scene_lib.SceneContents("blobs", gaussians=three_blobs())
  viewer = server_lib.Viewer(contents, port=_free_port())
  try:
    assert viewer._count.value == "600 of 660" and viewer._splats is not None
    viewer._opacity.value = 0.95  # above every opacity: nothing left to draw
    viewer._add_splats()
    assert viewer._count.value == "0 of 660" and viewer._splats is None
    viewer._opacity.value = 0.0
    viewer._add_splats()
    assert viewer._count.value == "660 of 660" and viewer._splats is not None
  finally:
    viewer.close()


def test_a_glb_mesh_is_placed_in_the_z_up_world(tmp_path):
  import trimesh
  from lrm_jax.io import mesh as mesh_io
  box = trimesh.creation.box((0.2, 0.4, 1.6))  # tall along our z
  box.apply_translation((0.0, 0.0, 0.5))
  path = mesh_io.write_glb(str(tmp_path / "box.glb"), box.vertices, box.faces)  # y-up file
  np.testing.assert_allclose(scene_lib.mesh_vertices(path), box.vertices, atol=1e-6)
  contents = scene_lib.SceneContents("box", mesh_path=path)
  centre, radius = scene_lib.bounds(contents)
  np.testing.assert_allclose(centre, (0, 0, 0.5), atol=1e-6)
  viewer = server_lib.Viewer(contents, port=_free_port())  # no Gaussians: no splat controls
  try:
    assert viewer._splats is None and not hasattr(viewer, "_count")
  finally:
    viewer.close()


def test_exactly_one_source():
  from lrm_jax.view.__main__ import load_contents
  with pytest.raises(ConfigError, match="exactly one"):
    load_contents(None, None)
  with pytest.raises(ConfigError, match="exactly one"):
    load_contents("a.ply", "W")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for_url(proc, deadline_s: float = 120.0) -> str:
  """The URL the command prints (it prints once the server listens)."""
  end = time.time() + deadline_s
  lines = []
  while time.time() < end:
    line = proc.stdout.readline()
    if not line:
      if proc.poll() is not None:
        break
      continue
    lines.append(line)
    if line.startswith("viewer: "):
      return line.split()[1]
  proc.kill()
  pytest.fail("the viewer printed no URL:\n" + "".join(lines) + proc.stderr.read())


def _object_pixels(png: bytes) -> dict[str, int]:
  """Counts of strongly red, green and blue pixels in a screenshot."""
  import io
  from PIL import Image
  rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  return {"red": int(np.sum((r > 140) & (g < 90) & (b < 90))),
          "green": int(np.sum((g > 120) & (r < 90) & (b < 90))),
          "blue": int(np.sum((b > 140) & (r < 90) & (g < 110)))}


def test_viewer_draws_the_gaussians_in_chromium(tmp_path):
  reason = browser.why_unavailable()
  if reason is not None:
    pytest.skip(f"no browser test: {reason}")
  path = ply.save_ply(str(tmp_path / "blobs.ply"), three_blobs())
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "lrm_jax.view", f"--ply={path}", f"--port={port}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    url = _wait_for_url(proc)
    assert url == f"http://127.0.0.1:{port}"
    # The side panel sits on the right; the object is drawn at the centre of the view.
    with browser.page(1000, 700) as p:
      p.page.goto(url)
      p.page.wait_for_selector("canvas", timeout=60_000)
      counts = {}
      for _ in range(90):  # until the splats are sorted and drawn (SwiftShader is slow)
        browser.hide_viser_notices(p.page)
        shot = p.page.screenshot(clip={"x": 100, "y": 100, "width": 520, "height": 500})
        counts = _object_pixels(shot)
        if min(counts.values()) > 150:
          break
        time.sleep(1.0)
      p.page.screenshot(path=str(tmp_path / "viewer.png"))
      assert min(counts.values()) > 150, (
          f"the splats were not drawn: strongly coloured pixels {counts} (screenshot "
          f"{tmp_path / 'viewer.png'}); browser errors: {p.errors}")
      # The panel shows how many Gaussians pass the default threshold (0.005).
      assert p.page.evaluate("() => Array.from(document.querySelectorAll('input'))"
                             ".some(i => i.value === '600 of 660')")
      errors = [e for e in p.errors if not any(k in e for k in VISER_OWN_ERRORS)]
      assert not errors, errors
      assert all(u.startswith((url, "ws://127.0.0.1", "data:", "blob:"))
                 for u in p.requests), p.requests
  finally:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
      rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      raise
  assert rc == 0, proc.stderr.read()

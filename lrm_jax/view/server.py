"""A :class:`~lrm_jax.view.scene.SceneContents` in a viser scene, served to the browser.

World z-up (docs/design.md §3). The Gaussians are viser's splat node (sorted and blended in
the browser); cameras are frustums in viser's (= our) OpenCV convention, each with its
image; a mesh is its ``.glb``; the turntable plays in the side panel. The panel's controls
change the opacity threshold, the SH degree (colours follow the browser's camera for
degrees above 0) and which cameras are shown.
"""

from __future__ import annotations

import base64
import html
import os
import threading

import numpy as np

from lrm_jax.view import scene as scene_lib

_COLORS = {"input": (30, 110, 230), "target": (230, 120, 20)}
_VIDEO_TYPES = {".mp4": "video/mp4", ".gif": "image/gif", ".webm": "video/webm"}


def frustum_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(wxyz [4], position [3])`` of an OpenCV ``c2w [4, 4]`` (viser frustums are OpenCV)."""
  import viser.transforms as vtf
  return vtf.SO3.from_matrix(np.asarray(c2w, np.float64)[:3, :3]).wxyz, np.asarray(
      c2w, np.float64)[:3, 3]


def video_html(path: str) -> str:
  """An inline, looping ``<video>`` (or ``<img>`` for a GIF) of ``path`` as a data URI."""
  ext = os.path.splitext(path)[1].lower()
  mime = _VIDEO_TYPES.get(ext, "video/mp4")
  with open(path, "rb") as f:
    uri = f"data:{mime};base64,{base64.b64encode(f.read()).decode('ascii')}"
  if mime.startswith("image/"):
    return f'<img src="{uri}" style="width:100%" alt="turntable">'
  return (f'<video src="{uri}" autoplay loop muted playsinline controls '
          'style="width:100%"></video>')


class Viewer:
  """The viser server of one scene; :meth:`close` stops it."""

  def __init__(self, contents: scene_lib.SceneContents, host: str = "127.0.0.1",
               port: int = 8080, sh_degree: int = -1, min_opacity: float = 0.005):
    import viser
    self.contents = contents
    self.server = viser.ViserServer(host=host, port=port, verbose=False)
    self._lock = threading.Lock()
    self._eye = None
    self._splats = None
    self.server.scene.set_up_direction("+z")
    self.server.scene.world_axes.visible = False
    self._camera_start()
    self._panel(sh_degree, min_opacity)
    self._add_cameras()
    if contents.mesh_path:
      self._add_mesh(contents.mesh_path)
    self._add_splats()
    if contents.gaussians is not None and contents.gaussians.sh_degree > 0:
      self.server.on_client_connect(self._follow_camera)

  @property
  def url(self) -> str:
    host = self.server.get_host()
    host = "localhost" if host in ("0.0.0.0", "::") else host
    return f"http://{host}:{self.server.get_port()}"

  def close(self) -> None:
    self.server.stop()

  # ---- Scene -----------------------------------------------------------------------------

  def _camera_start(self) -> None:
    """Start the browser's camera looking at the object from the front-right, above: just
    outside the ring of cameras if there are any, else at twice the object's size."""
    centre, radius = scene_lib.bounds(self.contents)
    cam = self.server.initial_camera
    distance = 2.2 * radius
    if self.contents.views:
      distance = 1.25 * float(np.median([np.linalg.norm(v.c2w[:3, 3] - centre)
                                        for v in self.contents.views]))
    direction = np.array([0.6, -0.75, 0.45])
    cam.position = centre + distance * direction / np.linalg.norm(direction)
    cam.look_at = centre
    cam.up = (0.0, 0.0, 1.0)

  def _add_cameras(self) -> None:
    self._frustums = {"input": [], "target": []}
    if not self.contents.views:
      return
    centre, _ = scene_lib.bounds(self.contents)
    # Frustums a tenth of the cameras' distance to the object: visible, not in the way.
    size = 0.1 * float(np.median([np.linalg.norm(v.c2w[:3, 3] - centre)
                                  for v in self.contents.views]))
    for v in self.contents.views:
      wxyz, position = frustum_pose(v.c2w)
      image = None if v.image is None else (np.clip(v.image, 0, 1) * 255).astype(np.uint8)
      handle = self.server.scene.add_camera_frustum(
          f"/cameras/{v.name}", fov=v.fov_y, aspect=v.aspect, scale=size,
          color=_COLORS.get(v.role, (60, 60, 60)), image=image, wxyz=wxyz, position=position,
          thickness=0.03 * size)
      self._frustums.setdefault(v.role, []).append(handle)

  def _add_mesh(self, path: str) -> None:
    import viser.transforms as vtf  # pylint: disable=g-import-not-at-top
    wxyz = vtf.SO3.from_matrix(scene_lib.mesh_to_world(path).astype(np.float64)).wxyz
    if path.endswith(".glb"):
      with open(path, "rb") as f:
        self.server.scene.add_glb("/mesh", f.read(), wxyz=wxyz)
    else:
      import trimesh  # pylint: disable=g-import-not-at-top
      self.server.scene.add_mesh_trimesh("/mesh", trimesh.load(path, force="mesh"), wxyz=wxyz)

  def _add_splats(self) -> None:
    g = self.contents.gaussians
    if g is None:
      return
    with self._lock:
      arrays = scene_lib.splat_arrays(g, int(self._sh.value), float(self._opacity.value),
                                      self._eye)
      self._count.value = f"{len(arrays['centers']):,} of {g.num:,}"
      if len(arrays["centers"]):  # replaces the node of the same name
        self._splats = self.server.scene.add_gaussian_splats("/gaussians", **arrays)
      elif self._splats is not None:  # a threshold above every opacity: nothing to draw
        self._splats.remove()
        self._splats = None

  def _follow_camera(self, client) -> None:
    @client.camera.on_update
    def _(camera) -> None:
      if int(self._sh.value) == 0 or self._lock.locked():
        return
      self._eye = np.asarray(camera.position, np.float32)
      self._add_splats()

  # ---- Side panel ------------------------------------------------------------------------

  def _panel(self, sh_degree: int, min_opacity: float) -> None:
    gui, c = self.server.gui, self.contents
    gui.add_markdown(f"**{html.escape(c.title)}**  \n" + "  \n".join(html.escape(n)
                                                                     for n in c.notes))
    if c.gaussians is not None:
      have = c.gaussians.sh_degree
      self._opacity = gui.add_slider("opacity >", 0.0, 0.99, 0.005, float(min_opacity))
      self._sh = gui.add_slider("SH degree", 0, max(have, 1), 1,
                                have if sh_degree < 0 else min(sh_degree, have),
                                disabled=have == 0)
      self._count = gui.add_text("Gaussians", "0", disabled=True)
      self._opacity.on_update(lambda _: self._add_splats())
      self._sh.on_update(lambda _: self._add_splats())
    for role in ("input", "target"):
      if any(v.role == role for v in c.views):
        box = gui.add_checkbox(f"{role} cameras", True)
        box.on_update(lambda e, r=role: self._show(r, e.target.value))
    if c.turntable_path:
      gui.add_html(video_html(c.turntable_path))

  def _show(self, role: str, visible: bool) -> None:
    for handle in self._frustums.get(role, []):
      handle.visible = visible

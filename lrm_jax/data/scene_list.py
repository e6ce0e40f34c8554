"""Long-LRM's scene list: a text file naming one scene JSON per line.

Each line is a path to a scene JSON, relative to the text file's folder (absolute paths are
kept); blank lines and lines starting with ``#`` are skipped. A scene JSON is
``{"scene_name", "frames": [{"file_path", "w2c" (4x4 OpenCV), "h", "w", "fx", "fy", "cx",
"cy"}]}`` with ``file_path`` relative to the JSON's folder; :mod:`lrm_jax.data.folder` reads
it (``folder:LIST.txt``).
"""

from __future__ import annotations

import os

from lrm_jax.errors import DataError


def read_scene_list(path: str) -> list[str]:
  """The scene JSON paths of the scene list ``path`` (each must exist)."""
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise DataError(f"{path}: cannot read the scene list ({e}).") from e
  base = os.path.dirname(os.path.abspath(path))
  scenes = []
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    scene = os.path.normpath(os.path.join(base, line))
    if not os.path.isfile(scene):
      raise DataError(f"{path}, line {number}: scene JSON {line!r} does not exist "
                      f"(looked for {scene}).")
    scenes.append(scene)
  if not scenes:
    raise DataError(f"{path}: the scene list names no scene.")
  return scenes


def write_scene_list(path: str, scene_jsons: list[str]) -> None:
  """Writes ``scene_jsons`` as a scene list at ``path`` (paths relative to its folder)."""
  base = os.path.dirname(os.path.abspath(path))
  with open(path, "w") as f:
    for scene in scene_jsons:
      f.write(os.path.relpath(os.path.abspath(scene), base) + "\n")

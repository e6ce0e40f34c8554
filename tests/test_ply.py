"""3DGS .ply: exact round trips, the header other tools expect, files other tools write."""

import io

import numpy as np
import pytest

from lrm_jax.io import ply
from lrm_jax.representations.gaussians import Gaussians


def random_gaussians(n, degree, seed=0):
  rng = np.random.default_rng(seed)
  k = (degree + 1) ** 2
  return Gaussians(
      means=rng.normal(size=(n, 3)).astype(np.float32),
      scales=rng.uniform(1e-3, 0.5, (n, 3)).astype(np.float32),
      quats=rng.normal(size=(n, 4)).astype(np.float32),
      opacities=rng.uniform(0.01, 0.99, (n, 1)).astype(np.float32),
      sh=rng.normal(size=(n, k, 3)).astype(np.float32))


def test_property_names_follow_3dgs():
  names = ply.gaussian_property_names(3)
  assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
  assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
  assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2",
                        "rot_3"]
  assert len(ply.gaussian_property_names(0)) == 17


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip(tmp_path, degree):
  g = random_gaussians(50, degree)
  path = ply.save_ply(str(tmp_path / "g.ply"), g)
  # Stored fields come back bit-exact ...
  fields = ply.gaussians_to_ply_fields(g)
  back = ply.read_ply(path)["vertex"]
  assert list(back) == list(fields)
  for k in fields:
    np.testing.assert_array_equal(back[k], fields[k])
  # ... and the Gaussians to float32 rounding of the logit / log encodings.
  h = ply.load_ply(path)
  np.testing.assert_array_equal(h.means, g.means)
  np.testing.assert_array_equal(h.quats, g.quats)
  np.testing.assert_array_equal(h.sh, g.sh)
  np.testing.assert_allclose(h.scales, g.scales, rtol=1e-6)
  np.testing.assert_allclose(h.opacities, g.opacities, rtol=1e-6)


def test_f_rest_is_channel_major(tmp_path):
  g = random_gaussians(2, 1)
  sh = np.zeros((2, 4, 3), np.float32)
  sh[:, 1:, 0] = [1, 2, 3]  # red
  sh[:, 1:, 1] = [4, 5, 6]  # green
  sh[:, 1:, 2] = [7, 8, 9]  # blue
  fields = ply.gaussians_to_ply_fields(g.replace(sh=sh))
  np.testing.assert_array_equal([fields[f"f_rest_{i}"][0] for i in range(9)], np.arange(1, 10))


def test_header_parses_as_a_standard_tool_would(tmp_path):
  g = random_gaussians(7, 3)
  path = ply.save_ply(str(tmp_path / "g.ply"), g)
  raw = open(path, "rb").read()
  end = raw.index(b"end_header\n") + len(b"end_header\n")
  lines = raw[:end].decode("ascii").splitlines()
  names = ply.gaussian_property_names(3)
  assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 7"]
  assert lines[3:-1] == [f"property float {n}" for n in names]
  assert len(raw) - end == 7 * 4 * len(names)
  body = np.frombuffer(raw[end:], np.dtype([(n, "<f4") for n in names]))
  np.testing.assert_array_equal(body["opacity"], ply.gaussians_to_ply_fields(g)["opacity"])
  # trimesh's own PLY parser sees the same vertex properties.
  trimesh_ply = pytest.importorskip("trimesh.exchange.ply")
  loaded = trimesh_ply.load_ply(io.BytesIO(raw))
  data = loaded["metadata"]["_ply_raw"]["vertex"]["data"]
  assert list(data.dtype.names) == names
  np.testing.assert_array_equal(np.stack([data["x"], data["y"], data["z"]], -1), g.means)
  np.testing.assert_array_equal(data["rot_2"], g.quats[:, 2])


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_reads_files_written_by_trimesh(tmp_path, encoding):
  """Another writer: extra properties, a face element with a list property."""
  trimesh = pytest.importorskip("trimesh")
  from trimesh.exchange import ply as trimesh_ply
  v = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
  mesh = trimesh.Trimesh(vertices=v, faces=[[0, 1, 2], [2, 3, 4], [3, 4, 5]], process=False)
  mesh.vertex_attributes["opacity"] = np.linspace(-2, 2, 6).astype(np.float32)
  path = tmp_path / f"{encoding}.ply"
  path.write_bytes(trimesh_ply.export_ply(mesh, encoding=encoding, include_attributes=True))
  out = ply.read_ply(str(path))
  np.testing.assert_allclose(np.stack([out["vertex"][k] for k in "xyz"], -1), v, atol=1e-6)
  np.testing.assert_allclose(out["vertex"]["opacity"], np.linspace(-2, 2, 6), atol=1e-6)
  np.testing.assert_array_equal(np.stack(out["face"]["vertex_indices"]),
                                [[0, 1, 2], [2, 3, 4], [3, 4, 5]])


def test_reads_shuffled_ascii_with_extras(tmp_path):
  g = random_gaussians(3, 1, seed=2)
  fields = ply.gaussians_to_ply_fields(g)
  names = list(fields)[::-1] + ["red"]  # reversed order and an extra uchar property
  lines = ["ply", "format ascii 1.0", "comment written by hand", "element vertex 3"]
  lines += [f"property {'uchar' if n == 'red' else 'float'} {n}" for n in names]
  lines += ["element camera 1", "property float fov", "end_header"]
  for i in range(3):
    lines.append(" ".join("7" if n == "red" else repr(float(fields[n][i])) for n in names))
  lines.append("0.5")
  path = tmp_path / "ascii.ply"
  path.write_text("\n".join(lines) + "\n")
  h = ply.load_ply(str(path))
  np.testing.assert_array_equal(h.means, g.means)
  np.testing.assert_array_equal(h.sh, g.sh)
  np.testing.assert_allclose(h.opacities, g.opacities, rtol=1e-6)
  assert ply.read_ply(str(path))["camera"]["fov"][0] == np.float32(0.5)


def test_bad_files_say_why(tmp_path):
  bad = tmp_path / "bad.ply"
  bad.write_bytes(b"not a ply\n")
  with pytest.raises(ValueError, match="not a PLY"):
    ply.read_ply(str(bad))
  pts = tmp_path / "points.ply"
  ply.write_ply(str(pts), {"x": np.zeros(2), "y": np.zeros(2), "z": np.zeros(2)})
  with pytest.raises(ValueError, match="missing"):
    ply.load_ply(str(pts))

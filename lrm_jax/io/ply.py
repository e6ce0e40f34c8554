"""3D Gaussian splatting ``.ply`` files: read and write, no plyfile dependency.

The 3DGS layout (graphdeco-inria/gaussian-splatting ``save_ply``), which viewers and other
tools read: one ``vertex`` element, binary little endian, all ``float``, in this order:

  x y z nx ny nz f_dc_0..2 f_rest_0..(3 (K - 1) - 1) opacity scale_0..2 rot_0..3

with opacity stored as a logit, scales as logs, ``rot`` a ``wxyz`` quaternion (not
necessarily unit) and ``f_rest`` channel-major: all red coefficients 1..K-1, then green,
then blue (``f_rest[c * (K - 1) + j - 1] = sh[j, c]``).

Reading accepts any PLY a tool may write: ascii or binary (either endianness), properties
in any order, extra properties and extra elements (list properties included).
"""

from __future__ import annotations

import os

import numpy as np

from lrm_jax.errors import DataError
from lrm_jax.representations.gaussians import Gaussians
from lrm_jax.representations import sh as sh_lib

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_OPACITY_EPS = 1e-7  # opacities are clipped to [eps, 1 - eps] so the logit is finite
_SCALE_MIN = 1e-12  # and scales to at least this so the log is
_MAX_LOG_SCALE = 88.0  # stored log-scales above this overflow float32's exp


# ----------------------------------------------------------------------------------------
# Generic PLY.
# ----------------------------------------------------------------------------------------


def _parse_header(f, path: str):
  """Reads the header: ``(format, [(element, count, [(name, type, list_count_type)])])``."""
  if f.readline().strip() != b"ply":
    raise DataError(f"{path}: not a PLY file (no 'ply' magic line).")
  fmt, elements = None, []
  while True:
    line = f.readline()
    if not line:
      raise DataError(f"{path}: PLY header has no end_header.")
    words = line.decode("ascii", "replace").split()
    if not words or words[0] in ("comment", "obj_info"):
      continue
    if words[0] == "end_header":
      break
    if words[0] == "format":
      if len(words) < 2 or words[1] not in _FORMATS:
        raise DataError(f"{path}: unsupported PLY format line {line!r}.")
      fmt = words[1]
    elif words[0] == "element":
      elements.append((words[1], int(words[2]), []))
    elif words[0] == "property":
      if not elements:
        raise DataError(f"{path}: property before any element.")
      if words[1] == "list":
        elements[-1][2].append((words[4], _TYPES[words[3]], _TYPES[words[2]]))
      else:
        elements[-1][2].append((words[2], _TYPES[words[1]], None))
    else:
      raise DataError(f"{path}: unexpected PLY header line {line!r}.")
  if fmt is None:
    raise DataError(f"{path}: PLY header has no format line.")
  return fmt, elements


def _finish_columns(cols, props):
  """Scalar columns become arrays; list columns stay lists of per-row arrays."""
  return {name: (np.asarray(cols[name], t) if lt is None else cols[name])
          for name, t, lt in props}


def _read_binary_element(buf, offset, count, props, endian, path: str, element: str):
  """One element of a binary body: ``(columns, new offset)``."""
  if all(lt is None for _, _, lt in props):  # fixed-size rows: one vectorised read
    dtype = np.dtype([(name, endian + t) for name, t, _ in props])
    need = count * dtype.itemsize
    if len(buf) - offset < need:
      raise DataError(f"{path}: truncated: element {element!r} needs {count} rows x "
                      f"{dtype.itemsize} bytes = {need} bytes after the header (from byte "
                      f"{offset} of the body), but the body has {len(buf)} bytes.")
    rows = np.frombuffer(buf, dtype, count=count, offset=offset)
    return {name: rows[name].copy() for name, _, _ in props}, offset + count * dtype.itemsize
  # Rows with lists (faces and the like): walk them row by row.
  cols = {name: [] for name, _, _ in props}
  for _ in range(count):
    for name, t, lt in props:
      if lt is None:
        cols[name].append(np.frombuffer(buf, endian + t, 1, offset)[0])
        offset += np.dtype(t).itemsize
      else:
        n = int(np.frombuffer(buf, endian + lt, 1, offset)[0])
        offset += np.dtype(lt).itemsize
        cols[name].append(np.frombuffer(buf, endian + t, n, offset).copy())
        offset += n * np.dtype(t).itemsize
  return _finish_columns(cols, props), offset


def _read_ascii_element(tokens, pos, count, props, path: str, element: str):
  """One element of an ascii body (``tokens`` is every remaining word)."""
  if all(lt is None for _, _, lt in props):
    need = count * len(props)
    if len(tokens) - pos < need:
      raise DataError(f"{path}: element {element!r} needs {count} rows of {len(props)} "
                      f"values ({need}), but only {len(tokens) - pos} values are left: "
                      "missing rows?")
    block = tokens[pos:pos + need].reshape(count, len(props))
    return ({name: block[:, i].astype(t) for i, (name, t, _) in enumerate(props)},
            pos + count * len(props))
  cols = {name: [] for name, _, _ in props}
  for _ in range(count):
    for name, t, lt in props:
      if lt is None:
        cols[name].append(np.asarray(tokens[pos]).astype(t))
        pos += 1
      else:
        n = int(tokens[pos])
        cols[name].append(tokens[pos + 1:pos + 1 + n].astype(t))
        pos += 1 + n
  return _finish_columns(cols, props), pos


def read_ply(path: str) -> dict[str, dict[str, np.ndarray]]:
  """All elements of a PLY file: ``{element: {property: values}}`` in file order."""
  with open(path, "rb") as f:
    fmt, elements = _parse_header(f, path)
    body = f.read()
  out = {}
  try:
    if fmt == "ascii":
      tokens, pos = np.asarray(body.split()).astype(str), 0
      for name, count, props in elements:
        out[name], pos = _read_ascii_element(tokens, pos, count, props, path, name)
    else:
      offset = 0
      for name, count, props in elements:
        out[name], offset = _read_binary_element(body, offset, count, props,
                                                 _FORMATS[fmt], path, name)
  except (ValueError, IndexError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"{path}: malformed PLY body ({e}).") from e
  return out


def write_ply(path: str, vertex: dict[str, np.ndarray], comments: tuple[str, ...] = ()) -> str:
  """Writes one ``vertex`` element of float properties (insertion order), binary LE."""
  names = list(vertex)
  n = len(next(iter(vertex.values()))) if names else 0
  rows = np.empty(n, np.dtype([(k, "<f4") for k in names]))
  for k in names:
    rows[k] = np.asarray(vertex[k], np.float32).reshape(n)
  header = ["ply", "format binary_little_endian 1.0"] + [f"comment {c}" for c in comments]
  header += [f"element vertex {n}"] + [f"property float {k}" for k in names] + ["end_header"]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(("\n".join(header) + "\n").encode("ascii"))
    f.write(rows.tobytes())
  return path


# ----------------------------------------------------------------------------------------
# 3DGS Gaussians.
# ----------------------------------------------------------------------------------------


def gaussian_property_names(sh_degree: int) -> list[str]:
  """The 3DGS vertex properties, in file order, for SH of ``sh_degree``."""
  rest = 3 * (sh_lib.num_sh_bases(sh_degree) - 1)
  return (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
          + [f"f_rest_{i}" for i in range(rest)] + ["opacity"]
          + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def gaussians_to_ply_fields(g: Gaussians) -> dict[str, np.ndarray]:
  """Unbatched Gaussians ``[N]`` -> the 3DGS vertex properties (file order, stored form)."""
  means, scales, quats, opacities, sh = (np.asarray(x, np.float64) for x in
                                         (g.means, g.scales, g.quats, g.opacities, g.sh))
  if means.ndim != 2:
    raise ValueError(f"save one scene at a time: means {means.shape} should be [N, 3].")
  k = sh.shape[1]
  o = np.clip(opacities[:, 0], _OPACITY_EPS, 1.0 - _OPACITY_EPS)
  rest = np.swapaxes(sh[:, 1:, :], 1, 2).reshape(len(means), 3 * (k - 1))  # channel-major
  cols = ([means[:, i] for i in range(3)] + [np.zeros(len(means))] * 3
          + [sh[:, 0, c] for c in range(3)] + [rest[:, i] for i in range(rest.shape[1])]
          + [np.log(o) - np.log1p(-o)] + [np.log(np.maximum(scales[:, i], _SCALE_MIN))
                                          for i in range(3)] + [quats[:, i] for i in range(4)])
  names = gaussian_property_names(sh_lib.sh_degree(k))
  return {name: col.astype(np.float32) for name, col in zip(names, cols)}


def ply_fields_to_gaussians(vertex: dict[str, np.ndarray]) -> Gaussians:
  """3DGS vertex properties (any order, extras ignored) -> numpy Gaussians ``[N]``."""
  base = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [
      f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
  missing = [name for name in base if name not in vertex]
  if missing:
    raise ValueError(f"not a 3DGS ply: vertex properties {missing} are missing.")
  num_rest = sum(1 for name in vertex if name.startswith("f_rest_"))
  if num_rest % 3:
    raise ValueError(f"{num_rest} f_rest properties is not a multiple of 3.")
  k = 1 + num_rest // 3
  sh_lib.sh_degree(k)
  col = lambda name: np.asarray(vertex[name], np.float32)
  stack = lambda names: np.stack([col(x) for x in names], -1)
  n = len(col("x"))
  rest = stack([f"f_rest_{i}" for i in range(num_rest)]) if num_rest else np.zeros((n, 0))
  sh = np.concatenate([stack([f"f_dc_{i}" for i in range(3)])[:, None, :],
                       np.swapaxes(rest.reshape(n, 3, k - 1), 1, 2)], axis=1)
  logit = col("opacity").astype(np.float64)
  return Gaussians(
      means=stack(["x", "y", "z"]),
      scales=np.exp(stack([f"scale_{i}" for i in range(3)]).astype(np.float64)).astype(
          np.float32),
      quats=stack([f"rot_{i}" for i in range(4)]),
      opacities=(1.0 / (1.0 + np.exp(-logit))).astype(np.float32)[:, None],
      sh=sh.astype(np.float32))


def save_ply(path: str, g: Gaussians) -> str:
  """Writes unbatched Gaussians as a standard 3DGS ``.ply``."""
  return write_ply(path, gaussians_to_ply_fields(g))


def check_values(vertex: dict[str, np.ndarray], path: str) -> None:
  """Raises ``DataError`` naming the file, each property and its count of non-finite
  values, or of log-scales over 88 (``exp`` is infinite in float32: an impossible size).
  A NaN opacity alone changes a fifth of a render's pixels."""
  problems = []
  for name in gaussian_property_names(3):
    if name not in vertex:
      continue
    values = np.asarray(vertex[name], np.float64)
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
      problems.append(f"property {name!r}: {bad} non-finite")
    elif name.startswith("scale_") and np.any(values > _MAX_LOG_SCALE):
      problems.append(f"property {name!r}: {int(np.sum(values > _MAX_LOG_SCALE))} log-scale(s) "
                      f"over {_MAX_LOG_SCALE:g} (an infinite size)")
  if problems:
    n = len(np.asarray(vertex["x"])) if "x" in vertex else 0
    raise DataError(f"{path}: {'; '.join(problems)} (of {n} Gaussians); fix or drop them "
                    "before rendering.")


def load_ply(path: str) -> Gaussians:
  """Reads a 3DGS ``.ply`` into numpy Gaussians (activated; SH degree from the file).

  Raises ``DataError`` naming the file for a bad header, a truncated body, missing
  properties and non-finite or impossible values (:func:`check_values`).
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found.")
  elements = read_ply(path)
  if "vertex" not in elements:
    raise DataError(f"{path}: no vertex element.")
  check_values(elements["vertex"], path)
  try:
    return ply_fields_to_gaussians(elements["vertex"])
  except ValueError as e:
    raise DataError(f"{path}: {e}") from None

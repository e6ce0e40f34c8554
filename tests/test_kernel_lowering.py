"""The Pallas kernels lower for TPU (Mosaic) and GPU (Triton) from this CPU-only machine.

Interpret mode (tests/test_splat_pallas.py) does not prove that a kernel lowers, so this
checks `jax.jit(f).trace(*args).lower(lowering_platforms=(p,))` for 'tpu' and 'cuda',
forward and backward (jax.grad of a scalar loss), single camera and vmapped. Pallas TPU
lowering asks the current device for its chip; on a CPU host an abstract mesh with a TPU
`AbstractDevice` answers instead. If libtpu is importable (or LRM_LIBTPU_DIR names a
directory holding it), a subprocess also compiles the kernels for a v5e topology.
"""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from kernels import splat_pallas as sp
from tests import test_aot

H, W = 36, 44  # 3x3 tiles of 16, ragged edges
N, M, C = 64, 256, 3
TILES = 9
TARGETS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}
TPU_KIND = "TPU v5 lite"


@pytest.fixture(autouse=True)
def _clear_caches():
  # Lowering for several platforms in one process needs fresh caches.
  jax.clear_caches()
  yield
  jax.clear_caches()


def _specs(batch=None):
  lead = () if batch is None else (batch,)
  sds = lambda shape, dt: jax.ShapeDtypeStruct(lead + shape, dt)
  return (sds((N, 2), jnp.float32), sds((N, 3), jnp.float32), sds((N,), jnp.float32),
          sds((N, C), jnp.float32), sds((TILES, 2), jnp.int32), sds((M,), jnp.int32))


def _loss(backend):
  def loss(m, c, o, f, r, g):
    acc, t = sp.rasterize_tiles(m, c, o, f, r, g, height=H, width=W, backend=backend)
    return jnp.sum(acc * acc) + jnp.sum(t)
  return loss


def _programs(backend):
  """name -> (function, arg specs, number of kernel launches in its HLO)."""
  loss = _loss(backend)
  grad = jax.grad(loss, argnums=(0, 1, 2, 3))
  fwd = lambda *a: sp.rasterize_tiles(*a, height=H, width=W, backend=backend)
  vmap_grad = jax.vmap(grad)
  return {
      "forward": (fwd, _specs(), 1),
      "grad": (grad, _specs(), 2),
      "vmap_grad": (vmap_grad, _specs(batch=2), 2),
  }


def _lower_text(fn, specs, platform):
  if platform == "tpu":
    mesh = jax.sharding.AbstractMesh(
        (1,), ("x",), abstract_device=jax.sharding.AbstractDevice(TPU_KIND, 1, "tpu"))
    with jax.sharding.use_abstract_mesh(mesh):
      lowered = jax.jit(fn).trace(*specs).lower(lowering_platforms=("tpu",))
  else:
    lowered = jax.jit(fn).trace(*specs).lower(lowering_platforms=(platform,))
  return lowered.as_text()


# backend=None is what the renderer uses: the kernel flavour is chosen per platform at
# lowering time; the explicit flavours are checked too.
@pytest.mark.parametrize("backend", [None, "native"])
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("program", ["forward", "grad", "vmap_grad"])
def test_kernels_lower(platform, program, backend):
  if backend == "native":
    backend = "tpu" if platform == "tpu" else "gpu"
  fn, specs, n_kernels = _programs(backend)[program]
  try:
    text = _lower_text(fn, specs, platform)
  except Exception as e:  # fail loudly with the lowering error itself
    pytest.fail(f"splat kernels ({program}, backend={backend}) no longer lower for "
                f"{platform}: {type(e).__name__}: {e}")
  calls = re.findall(r"custom_call @([\w$.]+)", text)
  kernels = [c for c in calls if c == TARGETS[platform]]
  assert len(kernels) == n_kernels, (platform, program, calls)
  other = set(TARGETS.values()) - {TARGETS[platform]}
  assert not other & set(calls), f"kernel of the wrong platform in the {platform} HLO"
  # The backward sums per-intersection gradients by Gaussian with a sort and a segmented
  # scan: no scatter(-add), which XLA:GPU would run with atomics (not deterministic).
  assert "scatter" not in text, f"a scatter in the {platform} {program} program"


def _libtpu_dir():
  if os.environ.get("LRM_LIBTPU_DIR"):
    return os.environ["LRM_LIBTPU_DIR"]
  if importlib.util.find_spec("libtpu") is not None:
    return ""
  return None


_COMPILE_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from jax.experimental import topologies
    from kernels import splat_pallas as sp
    topo = topologies.get_topology_desc(
        platform="tpu", topology_name="v5e:2x2", chip_config_name="default",
        chips_per_host_bounds=(2, 2, 1), num_slices=1)
    dev = topo.devices[0]
    shd = jax.sharding.SingleDeviceSharding(dev)
    H, W, N, M, C = 36, 44, 64, 256, 3
    specs = [jax.ShapeDtypeStruct(s, d, sharding=shd) for s, d in [
        ((N, 2), jnp.float32), ((N, 3), jnp.float32), ((N,), jnp.float32),
        ((N, C), jnp.float32), ((9, 2), jnp.int32), ((M,), jnp.int32)]]
    def loss(*a):
      acc, t = sp.rasterize_tiles(*a, height=H, width=W)
      return jnp.sum(acc * acc) + jnp.sum(t)
    fwd = lambda *a: sp.rasterize_tiles(*a, height=H, width=W)
    mesh = jax.sharding.AbstractMesh(
        (1,), ("x",), abstract_device=jax.sharding.AbstractDevice(dev.device_kind, 1, "tpu"))
    for name, fn in [("forward", fwd), ("grad", jax.grad(loss, argnums=(0, 1, 2, 3)))]:
      with jax.sharding.use_abstract_mesh(mesh):
        lowered = jax.jit(fn).trace(*specs).lower(lowering_platforms=("tpu",))
      lowered.compile()
      print("COMPILED", name, dev.device_kind, flush=True)
""")


def test_tpu_full_compile_with_libtpu():
  libtpu_dir = _libtpu_dir()
  if libtpu_dir is None:
    pytest.skip("libtpu not installed (set LRM_LIBTPU_DIR to a `pip install --target` dir)")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, libtpu_dir, env.get("PYTHONPATH")) if p)
  env.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # quiets libtpu's host probing
  with test_aot.libtpu_lock():
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, cwd=repo,
                          capture_output=True, text=True, timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0 and out.count("COMPILED") == 2, out[-6000:]

"""Ahead-of-time compilation: the abstract batch matches the pipeline, memory/FLOP analysis
of a compiled step, the TPU compiler's out-of-memory messages, and (with libtpu) the
trainer's step compiles for a TPU v5e 2x2 slice from this CPU-only machine, so TPU lowering
(the Pallas splatting kernel under shard_map, FSDP collectives, scans) never breaks
silently.

TPU compile times on a 2-core CPU (libtpu 0.0.42.1; load 3-6): tiny LRM as configured
40-70 s; tiny GRM 135-220 s at its 64^2 images (its windowed attention, the intersection
sort and LPIPS each cost tens of seconds in the TPU backend's code generation), so its
test compiles tiny's network, renderer and Pallas kernel at 32^2 without LPIPS (~50 s;
LPIPS-VGG16 is compiled by the LRM test).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

from lrm_jax import aot, parallel
from lrm_jax.config_loading import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny GRM's architecture (all three upsampler stages, full 8x8 windows) at 32^2.
GRM_SMALL_IMAGES = ["data.input_size=32", "data.render_size=32", "data.target_size=32"]


def test_abstract_batch_matches_the_pipeline():
  from lrm_jax.data import pipeline
  from lrm_jax.train import setup
  config = load_config("configs/grm.py:micro")
  mesh = parallel.make_mesh(config.mesh, jax.devices()[:1])
  rules = config.logical_axis_rules
  program = setup.build(config, mesh)
  local = next(pipeline.make_iterator(config, "train", spec=program.family.batch_spec(config)))
  real = parallel.to_global_batch(local, mesh, rules)
  abstract = program.abstract_batch()
  assert jax.tree.structure(real) == jax.tree.structure(abstract)
  for r, a in zip(jax.tree.leaves(real), jax.tree.leaves(abstract)):
    assert (r.shape, r.dtype) == (a.shape, a.dtype)
    assert r.sharding.is_equivalent_to(a.sharding, r.ndim)


def test_cpu_step_compiles_with_memory_and_flops():
  config = load_config("configs/grm.py:micro")
  program, compiled, _ = aot.compile_train_step(config, jax.devices()[:1], log=lambda *_: None)
  stats = aot.analyse(compiled, 1)
  from lrm_jax.train import state as state_lib
  assert program.n_params == state_lib.count_params(program.abstract_boxed.params) > 0
  # The donated state comes back as the new state: arguments hold at least the params,
  # twice over for AdamW's moments.
  assert stats["argument"] >= 3 * 4 * program.n_params
  assert stats["temp"] > 0 and stats["output"] > 0 and stats["xla_flops"] > 0
  # >= 6 FLOPs per parameter per example (forward + backward matmuls) is a loose floor.
  assert program.flops > 6 * program.n_params * config.data.batch_size


def test_reconstruct_part_compiles_the_backbone_gradient_alone():
  """``--part=reconstruct``: parameters in, parameter-shaped gradients out, the step's
  matmul FLOPs (the renderer and the loss have none without LPIPS), smaller arguments (no
  optimiser moments)."""
  config = load_config("configs/long_lrm.py:micro")
  quiet = lambda *_: None
  step_program, step, _ = aot.compile_train_step(config, jax.devices()[:1], log=quiet)
  program, part, _ = aot.compile_reconstruct_step(config, jax.devices()[:1], log=quiet)
  grads = jax.tree.structure(program.abstract.params)
  assert jax.tree.structure(part.out_info) == grads
  for g, p in zip(jax.tree.leaves(part.out_info), jax.tree.leaves(program.abstract.params)):
    assert g.shape == p.shape
  assert 0 < program.flops == step_program.flops
  assert aot.analyse(part, 1)["argument"] < aot.analyse(step, 1)["argument"]


def test_jaxpr_flops_counts_scan_bodies_and_matmuls():
  import jax.numpy as jnp
  def f(w, x):  # 4 layers of [2, 8] x [8, 8], scanned
    y, _ = jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)
    return jnp.sum(y)
  w, x = jnp.ones((4, 8, 8)), jnp.ones((2, 8))
  assert aot.jaxpr_flops(jax.make_jaxpr(f)(w, x).jaxpr) == 4 * 2 * 2 * 8 * 8
  # As XLA's cost analysis counts it: the scan body once.
  assert aot.jaxpr_flops(jax.make_jaxpr(f)(w, x).jaxpr, scan_length=False) == 2 * 2 * 8 * 8
  # Backward: two more matmuls per layer (d input, d weight).
  grad = jax.make_jaxpr(jax.grad(f))(w, x).jaxpr
  assert aot.jaxpr_flops(grad) == 3 * 4 * 2 * 2 * 8 * 8
  conv = lambda k, im: jax.lax.conv_general_dilated(im, k, (1, 1), "VALID",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  k, im = jnp.ones((3, 3, 4, 5)), jnp.ones((1, 10, 10, 4))
  assert aot.jaxpr_flops(jax.make_jaxpr(conv)(k, im).jaxpr) == 2 * 8 * 8 * 5 * 3 * 3 * 4


def test_hbm_table_and_topology_names():
  assert aot.chip_generation("v5e:16x16") == "v5e" and aot.HBM_GIB["v5e"] == 16
  assert aot.HBM_GIB["v5p"] == 95 and aot.HBM_GIB["v4"] == 32 and aot.HBM_GIB["v6e"] == 32
  with pytest.raises(ValueError, match="unknown TPU generation"):
    aot.chip_generation("v9:2x2")


def test_out_of_memory_messages_are_parsed():
  # As libtpu 0.0.42.1 words it for a program whose temporaries do not fit.
  temps = aot.parse_out_of_memory(
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
      "temporaries (67.58G) exceeds available HBM (15.75G).")
  assert temps["what"] == "HLO temporaries"
  assert temps["required"] == pytest.approx(67.58 * 2**30)
  assert temps["available"] == pytest.approx(15.75 * 2**30)
  # The memory-space wording, with its breakdown and largest allocations (a sample written
  # after libtpu's format; the compiles of this session only produced the wording above).
  space = aot.parse_out_of_memory(
      "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space "
      "hbm. Used 17.35G of 15.75G hbm. Exceeded hbm capacity by 1.60G.\n\n"
      "Total hbm usage >= 17.60G:\n    reserved        258.00M \n    program          17.35G \n"
      "    arguments            0B \n\nLargest program allocations in hbm:\n\n"
      "  1. Size: 1.00G\n     Operator: op_name=\"jit(train_step)/dot_general\"\n"
      "     Shape: f32[16,4096,4096]{2,1,0:T(8,128)}\n     Unpadded size: 1.00G\n")
  assert space["required"] == pytest.approx(17.35 * 2**30)
  assert space["available"] == pytest.approx(15.75 * 2**30)
  assert space["total"] == pytest.approx(17.60 * 2**30)
  assert space["largest"][0] == "1. Size: 1.00G"
  assert any("f32[16,4096,4096]" in line for line in space["largest"])
  unknown = aot.parse_out_of_memory("RESOURCE_EXHAUSTED: something else")
  assert np.isnan(unknown["required"]) and unknown["largest"] == []


# ---- Compiles for a TPU v5e slice (needs libtpu, not a TPU) ----------------------------------

def _libtpu_path():
  """Where libtpu is: a ``pip install --target`` dir (LRM_LIBTPU_DIR), "" when it is
  importable here (requirements-test.txt), None when it is not installed."""
  if os.environ.get("LRM_LIBTPU_DIR"):
    return os.environ["LRM_LIBTPU_DIR"]
  if importlib.util.find_spec("libtpu") is not None:
    return ""
  return None


@contextlib.contextmanager
def libtpu_lock():
  """One libtpu process at a time on this host: libtpu holds a host-wide lockfile while it
  lives, so two test workers (``pytest -n 2``) compiling for a TPU at once would fail."""
  with open(os.path.join(tempfile.gettempdir(), "lrm_jax_libtpu_tests.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _compile_for_tpu(spec, overrides, flags=()):
  libtpu = _libtpu_path()
  if libtpu is None:
    pytest.skip("libtpu is not importable: `pip install -r requirements-test.txt` installs "
                "the pinned version (or set LRM_LIBTPU_DIR to a `pip install --target` dir)")
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, libtpu, env.get("PYTHONPATH")) if p)
  env["JAX_PLATFORMS"] = "cpu"  # the host backend stays the CPU; libtpu only compiles
  env.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")  # quiets libtpu's host probing
  env.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  args = [sys.executable, "-m", "lrm_jax.aot", f"--config={spec}", "--topology=v5e:2x2",
          "--fail_if_not_fits", *flags] + [f"--config.{o}" for o in overrides]
  with libtpu_lock():
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-6000:]
  return proc.stdout


def _check_report(out, mesh):
  assert f"mesh {mesh}" in out, out
  assert "-> FITS" in out, out
  params = int(re.search(r"parameters:\s+([\d,]+)", out).group(1).replace(",", ""))
  tflop = float(re.search(r"FLOPs per step:\s+([\d.]+) TFLOP", out).group(1))
  peak = float(re.search(r"peak per device:\s+([\d.]+) GiB", out).group(1))
  assert params > 0 and tflop >= 0 and 0 < peak < 16
  return params


def test_tiny_grm_step_compiles_for_tpu_v5e():
  # data x fsdp: FSDP all-gathers, and the Pallas splatting kernel (Mosaic) under shard_map.
  out = _compile_for_tpu("configs/grm.py:tiny",
                         ["data.batch_size=4", "mesh.shape=(2,2,1)"] + GRM_SMALL_IMAGES,
                         flags=["--nolpips"])
  _check_report(out, "{'data': 2, 'fsdp': 2, 'tensor': 1}")


def test_tiny_lrm_step_compiles_for_tpu_v5e():
  # The configured tiny LRM (shapes, LPIPS-VGG16 with random weights) on data x fsdp.
  out = _compile_for_tpu("configs/lrm.py:tiny", ["mesh.shape=(2,2,1)"])
  _check_report(out, "{'data': 2, 'fsdp': 2, 'tensor': 1}")


def test_tiny_pixelnerf_step_compiles_for_tpu_v5e():
  # The configured tiny pixelNeRF (ResNet encoder, projected-feature gathers, coarse and
  # fine ResnetFCs through the shared ray marcher) on data x fsdp.
  out = _compile_for_tpu("configs/pixelnerf.py:tiny", ["mesh.shape=(2,2,1)"],
                         flags=["--nolpips"])
  _check_report(out, "{'data': 2, 'fsdp': 2, 'tensor': 1}")

"""Meshes and logical rules; the same training on 1 device, 8 x data, 4 data x 2 fsdp and
2 data x 2 fsdp x 2 tensor gives the same parameters.

The equivalence check needs 8 (fake) CPU devices, so ``XLA_FLAGS`` must be set before jax
is imported: it runs this file as a script in subprocesses (``python tests/test_parallel.py
--worker grm|lrm``, one per test), which train the four meshes one after
another on subsets of the 8 devices from the same initial state and print one JSON line per
mesh. What "the same" means (float32 rounding and how far each model carries it) is
explained above ``COMMON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

# (data, fsdp, tensor) meshes compared against the one-device run.
MESHES = ((1, 1, 1), (8, 1, 1), (4, 2, 1), (2, 2, 2))
STEPS = 3
RTOL = 1e-5


# ---- Unit tests: mesh shapes and rules (no devices needed) ---------------------------------

def test_resolve_mesh_shape():
  from lrm_jax.parallel import resolve_mesh_shape
  assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert resolve_mesh_shape((-1, 2, 1), 8) == (4, 2, 1)
  assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  assert resolve_mesh_shape((2, 2, 2), 8) == (2, 2, 2)
  assert resolve_mesh_shape((-1, 1, 1), 1) == (1, 1, 1)
  for bad, n in [((-1, -1, 1), 8), ((3, -1, 1), 8), ((2, 2, 1), 8), ((0, 1, 1), 1)]:
    with pytest.raises(ValueError):
      resolve_mesh_shape(bad, n)


class _FakeMesh:
  """What ``logical_to_spec`` reads from a mesh: ``.shape`` (name -> size)."""

  def __init__(self, **sizes):
    self.shape = sizes


RULES = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"),
         ("heads", "tensor"), ("kv", None), ("tokens", None))


def test_logical_to_spec_maps_and_uses_each_mesh_axis_once():
  from jax.sharding import PartitionSpec as P
  from lrm_jax.parallel import logical_to_spec
  mesh = _FakeMesh(data=2, fsdp=2, tensor=2)
  assert logical_to_spec(("embed", "mlp"), RULES, (64, 256), mesh) == P("fsdp", "tensor")
  assert logical_to_spec(("embed", "heads", "kv"), RULES, (64, 4, 16), mesh) == P("fsdp", "tensor")
  # batch takes fsdp, so embed (which wants fsdp too) stays replicated.
  assert logical_to_spec(("batch", "tokens", "embed"), RULES, (8, 16, 64), mesh) == \
      P(("data", "fsdp"))
  # Names without a rule (scan's "layers") and None are replicated.
  assert logical_to_spec(("layers", "embed", "mlp"), RULES, (3, 64, 256), mesh) == \
      P(None, "fsdp", "tensor")
  # Without shapes: the rules alone (as flax's logical_to_mesh_axes).
  assert logical_to_spec(("batch", "embed"), RULES) == P(("data", "fsdp"))


def test_logical_to_spec_falls_back_to_replication_when_not_divisible():
  from jax.sharding import PartitionSpec as P
  from lrm_jax.parallel import logical_to_spec
  mesh = _FakeMesh(data=2, fsdp=4, tensor=2)
  assert logical_to_spec(("mlp", None), RULES, (17, 3), mesh) == P()  # 17 % 2
  assert logical_to_spec(("embed", "heads", "kv"), RULES, (32, 1, 16), mesh) == P("fsdp")
  assert logical_to_spec(("embed",), RULES, (6,), mesh) == P()  # 6 % 4
  # (data, fsdp) = 8 does not divide 4 rows: fewer axes (data) do.
  assert logical_to_spec(("batch", None), RULES, (4, 3), mesh) == P("data")
  assert logical_to_spec(("batch",), RULES, (1,), mesh) == P()
  # Size-1 mesh axes shard nothing and are left out.
  assert logical_to_spec(("embed", "mlp"), RULES, (32, 64), _FakeMesh(data=8, fsdp=1, tensor=1)) \
      == P()
  # A later rule for the same name is the fallback when the first cannot apply.
  rules = (("embed", "fsdp"), ("embed", "tensor"))
  assert logical_to_spec(("embed",), rules, (6,), _FakeMesh(fsdp=4, tensor=2)) == P("tensor")


def test_rules_are_checked_against_the_mesh():
  from lrm_jax.parallel import check_rules, normalize_rules
  check_rules(RULES, ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match="not in the mesh"):
    check_rules((("embed", "fdsp"),), ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match="repeats"):
    check_rules((("batch", ("data", "data")),), ("data",))
  assert normalize_rules((("kv", None), ("embed", "fsdp"))) == (("kv", ()), ("embed", ("fsdp",)))


def test_every_param_of_every_config_gets_a_valid_spec():
  """Specs of all GRM (and LRM) variants' params and AdamW state on the paper-scale mesh."""
  import jax
  from lrm_jax.config_loading import load_config
  from lrm_jax.parallel import tree_specs
  from lrm_jax.models import family
  from lrm_jax.train import state as state_lib
  mesh = _FakeMesh(data=16, fsdp=16, tensor=1)
  for spec in _config_specs(("micro", "tiny", "base", "paper")):
    config = load_config(spec)
    fam = family.get(config)
    tx = state_lib.make_optimizer(config)
    boxed, _ = state_lib.abstract_train_state(fam, fam.build(config), tx, config,
                                              jax.random.key(0))
    specs = tree_specs(boxed, config.logical_axis_rules, mesh)
    leaves = jax.tree.leaves(jax.tree.map(lambda x: x.value if hasattr(x, "names") else x,
                                          boxed, is_leaf=lambda x: hasattr(x, "names")))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(spec_leaves)
    sharded = 0
    for value, s in zip(leaves, spec_leaves):
      axes = [a for entry in s if entry for a in ((entry,) if isinstance(entry, str) else entry)]
      assert len(axes) == len(set(axes)), (spec, s)
      for dim, entry in zip(value.shape, s):
        if entry:
          names = (entry,) if isinstance(entry, str) else entry
          assert dim % int(np.prod([mesh.shape[a] for a in names])) == 0, (spec, value.shape, s)
      sharded += bool(axes)
    if "paper" in spec:  # FSDP really shards the big model
      assert sharded > len(leaves) // 2, spec


def _config_specs(variants):
  out = [f"configs/grm.py:{v}" for v in variants]
  if _lrm_available():
    from configs import lrm as lrm_cfg
    out += [f"configs/lrm.py:{v}" for v in ("tiny", "paper") if v in lrm_cfg.VARIANTS]
  return out


def _lrm_available() -> bool:
  return os.path.isfile(os.path.join(REPO, "lrm_jax", "models", "lrm.py"))


# ---- Equivalence across meshes (8 fake devices, subprocesses) --------------------------------
#
# A mesh changes only float32 rounding: XLA splits the batch contractions of the weight
# gradients into per-device partial sums plus an all-reduce, and each device runs kernels
# for its local batch (1, 2 or 8 rows) whose results differ from the one-device ones in the
# last bit. On one device, the step-1 gradients of 8 x batch 1 differ from batch 8 exactly
# as much as 8 x data differs from 1 device (GRM: 1.46e-5 on the worst leaf in both), so
# what the meshes add is rounding, not a sharding error. How far rounding goes depends on
# the model; the tolerances follow from measurements (each config's own lr):
#
# - All parameters as one vector (relative L2): RTOL = 1e-5, the bar, for both
#   (measured: LRM <= 2.5e-7, GRM <= 2.7e-6). Losses per step: RTOL (<= 3.4e-6).
# - Per leaf, rounding is amplified where a gradient is mostly cancellation (attention
#   query biases, quaternion normalisation, the LRM camera embedder, whose input hardly
#   varies after canonicalisation), and AdamW divides each element's step by that element's
#   own gradient magnitude, so a leaf that is all updates (zero-initialised biases, ModLN
#   modulation) carries the relative error of its smallest gradient elements.
# - LRM: its NeRF MLP's ReLU has a derivative jump at 0; of ~10^7 pre-activations per step
#   a few land within rounding distance of 0 and flip, moving a finite gradient
#   contribution: dL/dplanes differs by ~1e-4 between batch 8 and 8 x batch 1 on one device,
#   and neither matches a float64 evaluation better. With softplus all three agree to 3e-7,
#   so the equivalence run uses softplus in the decoder (``model.nerf_activation``; sharding
#   does not depend on a pointwise activation). Then per leaf: gradients <= 1.1e-5, parameters <= 1.3e-5;
#   checked to 1e-4.
# - GRM: 3DGS is not smooth (alpha < 1/255 skipped, alpha <= 0.99, a transmittance cut-off,
#   3-sigma tile culling). Per leaf: gradients <= 1.3e-4, parameters <= 6.7e-5; checked to
#   1e-3. Both bounds still expose any sharding error (a lost or doubled all-reduce, a wrong
#   slice of the batch: >= 1e-2 on gradients).
# - Both: attention key biases get no gradient (softmax ignores a shift shared by all keys);
#   theirs is rounding noise, which AdamW turns into +-lr steps: they are bounded by those
#   steps instead. Gradient norms per step: the per-leaf tolerance / 10.

# A real learning rate from the first update on: with warmup_steps=0 the config's lr, then
# 0.75 and 0.25 of it (cosine to total_steps=3).
COMMON = ["data.batch_size=8", "optimizer.warmup_steps=0", f"total_steps={STEPS}"]
# family: (config, overrides, per-leaf relative tolerances {grad, param}).
FAMILIES = {
    # micro GRM, rendering all Gaussians (the default keeps the 35% most opaque: a top-k
    # whose near-ties at the cut-off add one more discontinuity).
    "grm": ("configs/grm.py:micro", ["model.keep_fraction=1.0"],
            {"grad": 1e-3, "param": 1e-3}),
    # The tiny LRM's architecture (ViT encoder, scanned ModLN decoder, triplane upsampler,
    # NeRF MLP with coarse + importance samples) at micro sizes, for compile time.
    "lrm": ("configs/lrm.py:tiny", [
        "model.encoder.depth=1", "model.encoder.width=32", "model.encoder.num_heads=2",
        "model.encoder.mlp_dim=64", "model.width=32", "model.depth=1", "model.num_heads=2",
        "model.triplane_tokens=4", "model.triplane_channels=8", "model.camera_embed_dim=32",
        "model.nerf_hidden=16", "model.num_coarse=8", "model.num_fine=8",
        "data.input_size=32", "data.render_size=32", "data.target_size=16",
        "data.target_crop=8", "model.nerf_activation=softplus"], {"grad": 1e-4, "param": 1e-4}),
}
# The workers' XLA:CPU: 8 fake devices; a collective waits for a late peer thread up to 10
# minutes (default: abort after 40 s; 8 device threads share 2 busy cores); LLVM -O0, the
# same for every mesh (3 steps are compile-bound: the LRM worker needs 40% less CPU).
WORKER_XLA_FLAGS = ("--xla_force_host_platform_device_count=8 "
                    "--xla_cpu_collective_call_terminate_timeout_seconds=600 "
                    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120 "
                    "--xla_backend_optimization_level=0")
WORKER_TIMEOUT = 900


def _flat(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
          for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def _adam_mu(opt_state):
  """AdamW's first moment (an EMA of the gradients) from the optimiser state."""
  import jax
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "mu"))
           if hasattr(x, "mu")]
  assert len(found) == 1, "expected one ScaleByAdamState"
  return found[0].mu


def _worker(family: str) -> None:
  """Trains ``family`` for STEPS steps on each mesh in MESHES from the same initial state;
  prints one JSON line per mesh (timings on stderr)."""
  import time
  import jax
  from jax.sharding import PartitionSpec as P
  from lrm_jax import parallel
  from lrm_jax.config_loading import load_config
  from lrm_jax.data import pipeline
  from lrm_jax.train import setup

  spec, overrides, _ = FAMILIES[family]
  config = load_config(spec, COMMON + overrides)
  it = pipeline.make_iterator(config, "train")
  batches = [next(it) for _ in range(STEPS)]
  devices = jax.devices()
  reference, initial = None, None
  for shape in MESHES:
    t0, c0 = time.time(), time.process_time()
    config.mesh.shape = shape
    mesh = parallel.make_mesh(config.mesh, devices[:int(np.prod(shape))])
    program = setup.build(config, mesh)
    with program.mesh_context():
      init = lambda: program.jit_init()(program.init_rng())
      if initial is None:  # the trainer's init (jit with out_shardings) on one device
        state = init()
        initial = jax.device_get(state)
      elif shape == MESHES[-1]:  # ... and on the most sharded mesh: the same bits
        state = init()
        same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), jax.device_get(state),
                            initial)
        assert all(jax.tree.leaves(same)), f"sharded init differs on mesh {shape}"
      else:  # elsewhere the same initial state, placed with this mesh's shardings
        state = jax.device_put(initial, program.shardings)
      step, metrics = None, []
      for local in batches:
        batch = parallel.to_global_batch(local, mesh, program.rules)
        step = step or program.jit_step(batch)
        state, m = step(state, batch)
        metrics.append({k: float(m[k]) for k in ("loss", "grad_norm")})
    params, mu = _flat(state.params), _flat(_adam_mu(state.opt_state))
    count = lambda tree: sum(s.spec != P() for s in jax.tree.leaves(tree))
    n_sharded = count(program.shardings.params)
    n_sharded_mu = count(_adam_mu(program.shardings.opt_state))
    if reference is None:
      reference = (params, mu)
    ref_p, ref_mu = reference
    norm = lambda x: float(np.sqrt(np.sum(x * x)))
    mu_total = np.sqrt(sum(np.sum(v * v) for v in ref_mu.values()))
    leaves = {k: {"param_err": norm(params[k] - ref_p[k]) / max(norm(ref_p[k]), 1e-30),
                  "param_abs": float(np.max(np.abs(params[k] - ref_p[k]))),
                  "param_diff": norm(params[k] - ref_p[k]), "param_norm": norm(ref_p[k]),
                  "grad_err": norm(mu[k] - ref_mu[k]) / max(norm(ref_mu[k]), 1e-30),
                  "grad_share": norm(ref_mu[k]) / mu_total} for k in params}
    lr = float(config.optimizer.lr)
    print(json.dumps({"mesh": shape, "metrics": metrics, "leaves": leaves, "lr": lr,
                      "n_sharded": int(n_sharded), "n_sharded_mu": int(n_sharded_mu),
                      "n_params": len(params)}), flush=True)
    print(f"{family} mesh {shape}: {time.time() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s cpu", file=sys.stderr, flush=True)


def _start_worker(family: str, tmpdir: str):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + WORKER_XLA_FLAGS).strip()
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  env.setdefault("JAX_PLATFORMS", "cpu")
  out = open(os.path.join(tmpdir, f"{family}.out"), "w+")
  err = open(os.path.join(tmpdir, f"{family}.err"), "w+")
  proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", family],
                          cwd=REPO, env=env, stdout=out, stderr=err, text=True)
  return proc, out, err


def _worker_rows(family: str, tmpdir: str) -> list[dict]:
  """Runs one equivalence worker to completion and returns its JSON rows.

  Each test starts its own worker: under pytest-xdist (README's ``-n 2``) a module fixture
  that started both families' workers ran once per xdist process, so four 8-device
  processes shared two cores, and XLA:CPU's collectives starved (a rendezvous abort after
  10 minutes). The two tests still overlap when xdist puts them on different processes."""
  proc, out, err = _start_worker(family, tmpdir)
  try:
    try:
      proc.wait(timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    out.close()
    err.close()
  assert proc.returncode == 0, f"worker exit {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-6000:]}"
  rows = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
  assert [tuple(r["mesh"]) for r in rows] == list(MESHES), stdout + stderr[-3000:]
  return rows


def _check_rows(rows, tol: dict):
  """Against the one-device run (see the comment above COMMON): losses and gradient norms
  per step; gradients (Adam's first moment) and parameters per leaf (relative L2); all
  parameters as one vector."""
  ref = rows[0]
  noise_bound = 2 * ref["lr"] * (1 + 0.75 + 0.25)  # +-lr steps of the 3 updates
  for row in rows[1:]:
    mesh = tuple(row["mesh"])
    np.testing.assert_allclose([m["loss"] for m in row["metrics"]],
                               [m["loss"] for m in ref["metrics"]], rtol=RTOL,
                               err_msg=f"loss on mesh {mesh}")
    np.testing.assert_allclose([m["grad_norm"] for m in row["metrics"]],
                               [m["grad_norm"] for m in ref["metrics"]],
                               rtol=max(tol["grad"] / 10, RTOL),
                               err_msg=f"grad_norm on mesh {mesh}")
    noise_only = {k for k, v in row["leaves"].items() if v["grad_share"] < 1e-6}
    assert all(k.endswith("['k_b']") for k in noise_only), noise_only
    bad = {}
    for k, v in row["leaves"].items():
      if k in noise_only:
        if v["param_abs"] > noise_bound:
          bad[k] = v
      elif v["grad_err"] > tol["grad"] or v["param_err"] > tol["param"]:
        bad[k] = v
    assert not bad, (mesh, bad)
    kept = [v for k, v in row["leaves"].items() if k not in noise_only]
    overall = np.sqrt(sum(v["param_diff"] ** 2 for v in kept) /
                      sum(v["param_norm"] ** 2 for v in kept))
    assert overall <= RTOL, f"parameters differ by {overall:.2e} (relative L2) on mesh {mesh}"
  # 1 device and pure data parallelism replicate parameters; FSDP shards them and AdamW's
  # moments alike; tensor parallelism shards more.
  assert rows[0]["n_sharded"] == 0 and rows[1]["n_sharded"] == 0
  assert 0 < rows[2]["n_sharded"] < rows[3]["n_sharded"]
  assert all(r["n_sharded_mu"] == r["n_sharded"] for r in rows)


def test_grm_same_parameters_on_every_mesh(tmp_path):
  _check_rows(_worker_rows("grm", str(tmp_path)), FAMILIES["grm"][2])


def test_lrm_same_parameters_on_every_mesh(tmp_path):
  _check_rows(_worker_rows("lrm", str(tmp_path)), FAMILIES["lrm"][2])


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
  else:
    raise SystemExit("usage: python tests/test_parallel.py --worker grm|lrm")

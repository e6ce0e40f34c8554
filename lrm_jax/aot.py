"""Compile a config's train step for a TPU topology on any machine: memory, FLOPs, fits?

  python -m lrm_jax.aot --config=configs/grm.py:variant=paper --topology=v5e:16x16
  python -m lrm_jax.aot --config=configs/grm.py:tiny --topology=v5e:2x2 --config.mesh.shape=(1,4,1)

Needs ``libtpu`` (``pip install "libtpu==0.0.42.1"``, the version ``jax[tpu]==0.10.2`` pins)
but no TPU: ``jax.experimental.topologies`` describes the slice's devices, the mesh is built
from them exactly as ``train_and_evaluate`` builds it from real ones, the train state is only
``eval_shape``d, and the trainer's own step (``train.step.make_train_step``) is lowered with
``jit(step, in_shardings, out_shardings, donate_argnums=0)`` and compiled by the TPU
compiler. Prints the parameter count, per-device argument / temp / output memory
(``compiled.memory_analysis()``), FLOPs per step (``compiled.cost_analysis()``) and whether
the step fits the chip's HBM.

The program (model, optimiser, abstract state, shardings, step) comes from the one setup
path every command uses, :func:`lrm_jax.train.setup.build`; the batch from the family's
``batch_spec``.
"""

from __future__ import annotations

import re
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrm_jax import parallel
from lrm_jax.train import logger

# HBM per chip (GiB) by TPU generation (Cloud TPU system architecture docs).
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}
# Peak dense bf16 TFLOP/s per chip, for a rough time-per-step bound.
PEAK_BF16_TFLOPS = {"v4": 275, "v5e": 197, "v5litepod": 197, "v5p": 459, "v6e": 918}


# ---- TPU topologies ---------------------------------------------------------------------------

def topology_devices(topology: str, chips_per_host_bounds=(2, 2, 1), num_slices: int = 1):
  """The devices of a TPU slice such as ``v5e:16x16`` (needs libtpu, not a TPU)."""
  from jax.experimental import topologies
  topo = topologies.get_topology_desc(
      platform="tpu", topology_name=topology, chip_config_name="default",
      chips_per_host_bounds=tuple(chips_per_host_bounds), num_slices=num_slices)
  return list(topo.devices)


def chip_generation(topology: str) -> str:
  gen = topology.split(":")[0].lower()
  if gen not in HBM_GIB:
    raise ValueError(f"unknown TPU generation {gen!r} in {topology!r}; known: {sorted(HBM_GIB)}.")
  return gen


def analyse(compiled, num_devices: int) -> dict:
  """Per-device memory (bytes) and FLOPs of a compiled SPMD step.

  ``peak_bytes`` = arguments + temporaries + outputs - aliased (donated state is reused
  for the new state) + generated code: what must fit in one chip's HBM. ``cost_analysis``
  of an SPMD executable describes one device's program, so ``xla_flops`` is multiplied by
  the device count; it counts a scan (``nn.scan`` over layers) body once, so it undercounts
  scanned models -- ``jaxpr_flops`` does not.
  """
  out = logger.compiled_memory(compiled)
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  out["xla_flops_per_device"] = float(cost.get("flops", 0.0))
  out["xla_flops"] = out["xla_flops_per_device"] * num_devices
  out["bytes_accessed_per_device"] = float(cost.get("bytes accessed", 0.0))
  return out


def _sub_jaxprs(eqn):
  import jax.extend as jex
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jex.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jex.core.Jaxpr):
        yield v


def jaxpr_flops(jaxpr, scan_length: bool = True) -> float:
  """Matmul + convolution FLOPs of a jaxpr (2 per multiply-add), all devices together.

  Unlike XLA's ``cost_analysis`` (which counts a while/scan body once), a ``scan`` body
  counts ``length`` times, a ``shard_map`` body once per device, a ``cond`` its costliest
  branch; rematerialised forward passes appear in the backward jaxpr and are counted.
  Elementwise ops are ignored (they are a small share of a transformer's FLOPs).
  ``scan_length=False`` counts each scan body once, as ``cost_analysis`` does (the
  difference of the two corrects XLA's count: ``bench/train_step.py``).
  """
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out feat, in feat, *spatial)
      per_output = rhs[spec[1]] * np.prod([rhs[d] for d in spec[2:]])
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * per_output
    subs = [jaxpr_flops(j, scan_length) for j in _sub_jaxprs(eqn)]
    if not subs:
      continue
    if name == "cond":
      total += max(subs)
    elif name == "scan":
      total += (eqn.params["length"] if scan_length else 1) * sum(subs)
    elif name == "shard_map":
      total += eqn.params["mesh"].size * sum(subs)
    else:
      total += sum(subs)
  return float(total)


def _lower_and_compile(program, fn, jitted, args, log: Callable):
  """Counts ``fn``'s FLOPs, lowers ``jitted`` on ``args`` and compiles it (under the
  program's mesh context). Returns ``(program, compiled, seconds)``; raises
  :class:`DoesNotFit` when the compiler runs out of HBM."""
  t0 = time.perf_counter()
  # Pallas TPU lowering asks "the current device" for its chip; on a CPU host the
  # abstract mesh of the (TPU) mesh answers instead.
  with jax.sharding.use_abstract_mesh(program.mesh.abstract_mesh):
    program.flops = jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)
    lowered = jitted.lower(*args)
  log(f"lowered in {time.perf_counter() - t0:.1f} s; compiling ...")
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if "RESOURCE_EXHAUSTED" in str(e):
      raise DoesNotFit(str(e), program) from e
    raise
  return program, compiled, time.perf_counter() - t0


def compile_train_step(config, devices, perceptual=None, log: Callable = print):
  """Lowers and compiles the trainer's step of ``config`` for ``devices``.

  Returns ``(program, compiled, seconds)``; nothing is allocated on the devices.
  """
  from lrm_jax.train import setup
  program = setup.build(config, parallel.make_mesh(config.mesh, devices), perceptual)
  with program.mesh_context():
    batch = program.abstract_batch()
    return _lower_and_compile(program, program.step_fn, program.jit_step(batch),
                              (program.abstract, batch), log)


def compile_reconstruct_step(config, devices, perceptual=None, log: Callable = print):
  """Like :func:`compile_train_step`, for the reconstruction network alone: the gradient
  of a surrogate loss (the mean of every Gaussian attribute) of ``model.reconstruct`` with
  respect to the parameters, sharded as the trainer shards them. No renderer, loss or
  optimiser: it sizes the backbone when the whole step is too big to compile here.
  """
  del perceptual
  from lrm_jax.train import setup
  program = setup.build(config, parallel.make_mesh(config.mesh, devices))
  model = program.model

  def backbone_grads(params, inputs):
    def surrogate(p):
      g = model.apply({"params": p}, inputs, True, method=model.reconstruct)
      return sum(jnp.mean(x.astype(jnp.float32)) for x in jax.tree.leaves(g))
    return jax.grad(surrogate)(params)

  with program.mesh_context():
    args = (program.abstract.params, program.abstract_batch()["inputs"])
    shardings = jax.tree.map(lambda x: x.sharding, args)
    jitted = parallel.jit(backbone_grads, in_shardings=shardings,
                          out_shardings=shardings[0])
    return _lower_and_compile(program, backbone_grads, jitted, args, log)


PARTS = {"step": compile_train_step, "reconstruct": compile_reconstruct_step}


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = r"([\d.]+)([KMGT]?)B?"


def _bytes(number: str, unit: str) -> float:
  return float(number) * _UNITS[unit]


def parse_out_of_memory(message: str) -> dict:
  """What the TPU compiler's RESOURCE_EXHAUSTED message says about HBM.

  libtpu words it in (at least) two ways: "the total memory required for HLO temporaries
  (67.58G) exceeds available HBM (15.75G)", and "Ran out of memory in memory space hbm.
  Used 17.35G of 15.75G hbm. Exceeded hbm capacity by 1.60G." followed by a breakdown and
  the largest allocations. Returns ``required`` and ``available`` bytes (NaN when absent),
  ``what`` they are for, and up to 12 lines of ``largest`` allocations.
  """
  out = dict(required=float("nan"), available=float("nan"), what="?", largest=[])
  found = re.search(rf"required for ([\w ]+?) \({_SIZE}\) exceeds available HBM "
                    rf"\({_SIZE}\)", message)
  if found:
    out.update(what=found.group(1), required=_bytes(*found.group(2, 3)),
               available=_bytes(*found.group(4, 5)))
  else:
    found = re.search(rf"Used {_SIZE} of {_SIZE} hbm", message)
    if found:
      out.update(what="the program", required=_bytes(*found.group(1, 2)),
                 available=_bytes(*found.group(3, 4)))
  total = re.search(rf"Total hbm usage >= {_SIZE}", message)
  if total:
    out["total"] = _bytes(*total.group(1, 2))
  lines = message.splitlines()
  for i, line in enumerate(lines):
    if "Largest program allocations" in line:
      picked = [l.strip() for l in lines[i + 1:] if re.match(r"\s*\d+\. Size:", l)
                or re.match(r"\s+(Operator|Shape):", l)]
      out["largest"] = picked[:12]
      break
  return out


class DoesNotFit(RuntimeError):
  """The TPU compiler refused the step: it needs more HBM than a chip has."""

  def __init__(self, message: str, program):
    super().__init__(message)
    self.program = program
    parsed = parse_out_of_memory(message)
    self.what, self.required, self.available = (parsed["what"], parsed["required"],
                                                parsed["available"])
    self.largest = parsed["largest"]


def random_perceptual(config):
  """LPIPS-VGG16 with random weights: same FLOPs and memory as the real loss, no files."""
  if float(config.loss.get("lpips", 0.0)) <= 0:
    return None
  from lrm_jax.train import lpips
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  params = jax.jit(lpips.LPIPS().init)(jax.random.key(0), x, x)["params"]
  return lpips.lpips_fn(params)


def gib(n: float) -> float:
  return n / 2**30


def prepare_for_tpu(config) -> None:
  """Settings a TPU run resolves differently from this CPU host: the renderer backend
  (``auto`` means the Pallas kernel on TPU, the tiled jnp one on CPU)."""
  model = config.get("model")
  if model is not None and model.get("backend", None) == "auto":
    model.backend = "pallas"


def report(config, topology: str, devices, perceptual=None, log: Callable = print,
           part: str = "step") -> dict:
  """Compiles ``config`` for ``topology`` and returns (and logs) the numbers.

  Per-device bytes: ``argument``, ``temp``, ``output``, ``alias`` (outputs sharing an
  argument's buffer: the donated state), ``generated_code`` and ``peak_bytes`` (see
  :func:`analyse`). When the TPU compiler refuses the step for lack of HBM, ``fits`` is
  False and ``required`` / ``largest`` say what it wanted (memory fields are then NaN).
  """
  gen = chip_generation(topology)
  hbm = HBM_GIB[gen] * 2**30
  t0 = time.perf_counter()
  try:
    program, compiled, secs = PARTS[part](config, devices, perceptual, log)
    stats = analyse(compiled, len(devices))
    stats.update(fits=stats["peak_bytes"] <= hbm, compile_s=round(secs, 1))
  except DoesNotFit as e:
    program = e.program
    nan = float("nan")
    stats = dict(argument=nan, temp=nan, output=nan, alias=nan, generated_code=nan,
                 peak_bytes=nan, xla_flops=nan, fits=False, required=e.required,
                 required_for=e.what, largest=e.largest, message=str(e).strip()[:3000],
                 compile_s=round(time.perf_counter() - t0, 1))
  model = config.model
  stats.update(
      config=f"{config.family}-{config.variant}", topology=topology, devices=len(devices),
      mesh=dict(program.mesh.shape), n_params=program.n_params,
      global_batch=int(config.data.batch_size), remat=model.get("remat_policy", "?"),
      dtype=model.get("dtype", "?"), hbm_bytes=hbm, flops=program.flops,
      min_step_s=program.flops / (len(devices) * PEAK_BF16_TFLOPS[gen] * 1e12))
  stats["part"] = part
  log(f"{stats['config']} {'' if part == 'step' else '[' + part + ' only] '}on {topology} "
      f"({len(devices)} chips, mesh {stats['mesh']}), "
      f"global batch {stats['global_batch']}, remat {stats['remat']}, dtype {stats['dtype']}")
  log(f"  parameters:           {program.n_params:,}")
  if stats["fits"] or np.isfinite(stats["peak_bytes"]):
    log(f"  per device: arguments {gib(stats['argument']):.3f} GiB, temp "
        f"{gib(stats['temp']):.3f} GiB, outputs {gib(stats['output']):.3f} GiB (aliased "
        f"{gib(stats['alias']):.3f} GiB), code {gib(stats['generated_code']):.3f} GiB")
    log(f"  peak per device:      {gib(stats['peak_bytes']):.2f} GiB of {HBM_GIB[gen]} GiB "
        f"HBM -> {'FITS' if stats['fits'] else 'DOES NOT FIT'}")
  elif np.isfinite(stats["required"]):
    log(f"  DOES NOT FIT: the TPU compiler needs {gib(stats['required']):.2f} GiB for "
        f"{stats['required_for']} (a chip has {HBM_GIB[gen]} GiB)")
    for line in stats["largest"]:
      log(f"    {line}")
  else:
    log(f"  DOES NOT FIT (unparsed compiler message): {stats.get('message', '')}")
  xla = stats["xla_flops"]
  log(f"  FLOPs per step:       {stats['flops'] / 1e12:.1f} TFLOP (matmul + conv, from the "
      f"jaxpr; XLA cost_analysis: {xla / 1e12:.1f}, scan bodies once); "
      f">= {stats['min_step_s']:.3f} s/step at the bf16 peak")
  log(f"  compiled in {stats['compile_s']:.1f} s")
  return stats


# ---- CLI ----------------------------------------------------------------------------------------

def main(argv):
  del argv
  from absl import flags
  from lrm_jax import config_loading
  f = flags.FLAGS
  config = config_loading.config_from_command_line()
  prepare_for_tpu(config)
  devices = topology_devices(f.topology, [int(x) for x in f.chips_per_host_bounds],
                             f.num_slices)
  perceptual = random_perceptual(config) if f.lpips else None
  stats = report(config, f.topology, devices, perceptual, part=f.part)
  if f.json_out:
    import json
    with open(f.json_out, "w") as out:
      json.dump(stats, out, indent=1, default=str)
  if not stats["fits"] and f.fail_if_not_fits:
    raise SystemExit(1)


def _define_flags():
  from absl import flags
  from lrm_jax import config_loading
  config_loading.define_config_flag()
  flags.declare_key_flag("config")
  flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:16x16, v5p:4x4x4, v4:2x2x2")
  flags.DEFINE_list("chips_per_host_bounds", ["2", "2", "1"], "chips per host (x,y,z)")
  flags.DEFINE_integer("num_slices", 1, "number of slices (multislice)")
  flags.DEFINE_bool("lpips", True, "include the LPIPS-VGG16 loss (random weights) when "
                    "config.loss.lpips > 0, as a real training run would")
  flags.DEFINE_enum("part", "step", list(PARTS), "what to compile: the whole train step, "
                    "or the reconstruction network's gradient alone (no renderer, loss or "
                    "optimiser; for steps too big to compile on this host)")
  flags.DEFINE_bool("fail_if_not_fits", False, "exit 1 when the step does not fit in HBM")
  flags.DEFINE_string("json_out", "", "also write the numbers to this JSON file")


if __name__ == "__main__":
  from lrm_jax import cli, config_loading
  _define_flags()
  cli.run(main, flags_parser=config_loading.flags_parser)

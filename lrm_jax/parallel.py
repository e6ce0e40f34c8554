"""Device meshes, logical axis rules, multi-host start-up and global batches.

One code path from a laptop CPU to a TPU pod:

- a mesh ``(data, fsdp, tensor)`` from ``config.mesh`` (one ``-1`` fills an axis with the
  remaining devices), with Auto axis types so XLA's sharding propagation fills in what the
  program does not pin down;
- models name only *logical* axes (``batch``, ``embed``, ``mlp``, ``heads`` ...); the rules
  table in the config (``config.logical_axis_rules``, MaxText style) maps them to mesh axes.
  ``embed -> fsdp`` shards every parameter (and so its AdamW moments) over ``fsdp``;
  ``batch -> (data, fsdp)`` shards examples over both, so FSDP is data parallelism whose
  parameters are all-gathered per layer;
- a rule is applied to one array dimension only if it is *valid* there: a mesh axis is used
  at most once per spec, and the dimension must be divisible by the product of the mesh
  axes' sizes. Otherwise the next rule for that logical name is tried, then fewer mesh axes
  (``(data, fsdp)`` -> ``data``), and finally the dimension is replicated. So a tiny model
  on a big mesh, or a 1-head attention with ``tensor=2``, runs (replicated where it must)
  instead of failing;
- ``jax.distributed.initialize()`` on TPU pods and SLURM (detected from the environment), or
  with explicit ``--coordinator/--num_processes/--process_id`` flags (localhost tests);
- per-process numpy batches -> global ``jax.Array``s with
  ``jax.make_array_from_process_local_data``.

Activation constraints (``constrain``) take effect inside ``use_mesh(mesh, rules)``; outside
it they are no-ops, so models run unchanged in plain ``model.apply`` calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MeshAxes = tuple[str, ...]  # the mesh axes one array dimension is sharded over ((): none)


# ---- Mesh ---------------------------------------------------------------------------------

def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one ``-1`` in ``shape`` so that the product is ``num_devices``.

  >>> resolve_mesh_shape((-1, 2, 1), 8)
  (4, 2, 1)
  """
  shape = [int(s) for s in shape]
  if shape.count(-1) > 1:
    raise ValueError(f"mesh.shape {tuple(shape)}: at most one axis may be -1.")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh.shape {tuple(shape)}: sizes must be positive (or one -1).")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh.shape {tuple(shape)}: the fixed axes ({known} devices) do not "
                       f"divide the {num_devices} devices.")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices; "
                     f"{num_devices} are available.")
  return tuple(shape)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
  """A ``Mesh`` with Auto axis types from ``config.mesh`` (``shape``, ``axes``).

  ``devices`` defaults to all devices of all processes; pass a subset (tests) or a TPU
  topology's devices (``lrm_jax.aot``). ``mesh_utils`` orders devices for the physical
  interconnect (ICI rings on TPU) when it can.
  """
  devices = list(jax.devices() if devices is None else devices)
  axes = tuple(mesh_config.axes)
  if len(axes) != len(mesh_config.shape):
    raise ValueError(f"mesh.axes {axes} and mesh.shape {tuple(mesh_config.shape)} differ in "
                     "length.")
  shape = resolve_mesh_shape(mesh_config.shape, len(devices))
  try:
    from jax.experimental import mesh_utils
    dev_array = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # pylint: disable=broad-except  # e.g. fake CPU devices, odd subsets
    dev_array = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(dev_array, axes, axis_types=(AxisType.Auto,) * len(shape))


# ---- Logical axis rules -------------------------------------------------------------------

def normalize_rules(rules) -> tuple[tuple[str, MeshAxes], ...]:
  """``(("batch", ("data", "fsdp")), ("embed", "fsdp"), ("kv", None))`` -> tuples of axes."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f"logical axis rule {rule!r}: expected (logical_name, mesh_axes).")
    name, axes = rule
    if axes is None:
      axes = ()
    elif isinstance(axes, str):
      axes = (axes,)
    out.append((str(name), tuple(str(a) for a in axes)))
  return tuple(out)


def check_rules(rules, mesh_axis_names: Sequence[str]) -> None:
  """Raises if a rule names a mesh axis the mesh does not have (a typo would replicate)."""
  names = set(mesh_axis_names)
  for logical, axes in normalize_rules(rules):
    unknown = [a for a in axes if a not in names]
    if unknown:
      raise ValueError(f"logical axis rule {logical!r} -> {axes}: mesh axes {unknown} are not "
                       f"in the mesh {tuple(mesh_axis_names)}.")
    if len(set(axes)) != len(axes):
      raise ValueError(f"logical axis rule {logical!r} -> {axes} repeats a mesh axis.")


def _mesh_sizes(mesh) -> dict[str, int]:
  return dict(mesh.shape) if mesh is not None else {}


def logical_to_spec(logical_axes: Sequence[str | None], rules, shape: Sequence[int] | None = None,
                    mesh=None) -> P:
  """The PartitionSpec of an array whose dimensions have ``logical_axes`` names.

  For each dimension, in order, the rules for its name are tried in the order they are
  written; a candidate is valid if none of its mesh axes is already used by an earlier
  dimension and, when ``shape`` and ``mesh`` are given, the dimension divides by the
  product of their sizes (trailing axes are dropped until it does). No valid candidate, or
  no rule: the dimension is replicated. Names without rules (e.g. ``layers`` from
  ``nn.scan``) are replicated.
  """
  rules = normalize_rules(rules)
  sizes = _mesh_sizes(mesh)
  used: set[str] = set()
  spec: list[Any] = []
  for dim, name in enumerate(logical_axes):
    chosen: MeshAxes = ()
    if name is not None:
      for rule_name, axes in rules:
        if rule_name != name:
          continue
        cand = tuple(a for a in axes if a not in used)
        if len(cand) != len(axes):
          continue  # a mesh axis may shard only one dimension of an array
        if shape is not None and sizes:
          cand = tuple(a for a in cand if sizes.get(a, 1) > 1)  # size-1 axes shard nothing
          while cand and shape[dim] % math.prod(sizes[a] for a in cand):
            cand = cand[:-1]
        if cand:
          chosen = cand
          break
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else chosen)
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def _logical_names(leaf) -> tuple | None:
  return tuple(leaf.names) if isinstance(leaf, nn.Partitioned) else None


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


def tree_specs(abstract_boxed, rules, mesh=None):
  """PartitionSpecs for every leaf of a (possibly ``nn.Partitioned``-boxed) tree.

  Boxed leaves follow their logical names (validated against their shapes on ``mesh``);
  unboxed leaves (scalars such as ``step`` or AdamW's ``count``) are replicated. The
  result has the structure of the *unboxed* tree.
  """
  def one(leaf):
    names = _logical_names(leaf)
    value = leaf.value if _is_box(leaf) else leaf
    if names is None:
      return P()
    shape = tuple(value.shape)
    if len(names) != len(shape):
      raise ValueError(f"logical names {names} do not match shape {shape}.")
    return logical_to_spec(names, rules, shape, mesh)
  return jax.tree.map(one, abstract_boxed, is_leaf=_is_box)


def tree_shardings(abstract_boxed, mesh: Mesh, rules):
  """NamedShardings (unboxed structure) of a boxed abstract tree: params, optimiser state."""
  check_rules(rules, mesh.axis_names)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), tree_specs(abstract_boxed, rules, mesh),
                      is_leaf=lambda x: isinstance(x, P))


param_shardings = tree_shardings  # older name


def unbox(tree):
  """Strips ``nn.Partitioned`` boxes *without* flax's sharding constraints (the shardings
  come from ``tree_shardings``, which already handles dimensions the rules cannot split)."""
  return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


# ---- Activation constraints ---------------------------------------------------------------

_ACTIVE = threading.local()


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules) -> Iterator[Mesh]:
  """Activates ``mesh`` and ``rules`` for ``constrain`` (and flax's logical-rules context).

  Used around tracing/jitting of the train and eval steps. It deliberately does not call
  ``jax.set_mesh``: flax would then apply its own, rule-only (not shape-aware) constraints
  when unboxing parameters.
  """
  rules = normalize_rules(rules)
  check_rules(rules, mesh.axis_names)
  previous = getattr(_ACTIVE, "value", None)
  _ACTIVE.value = (mesh, rules)
  try:
    with nn.logical_axis_rules(rules):
      yield mesh
  finally:
    _ACTIVE.value = previous


def active_mesh() -> tuple[Mesh, tuple] | None:
  """``(mesh, rules)`` of the innermost ``use_mesh``, or None."""
  return getattr(_ACTIVE, "value", None)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """A sharding constraint from logical names; no-op outside ``use_mesh`` or on 1 device."""
  active = active_mesh()
  if active is None:
    return x
  mesh, rules = active
  if mesh.size == 1:
    return x
  if len(logical_axes) != x.ndim:
    raise ValueError(f"constrain: {len(logical_axes)} names {tuple(logical_axes)} for an array "
                     f"of shape {x.shape}.")
  spec = logical_to_spec(logical_axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_map(fn: Callable, batched: tuple, replicated_args: tuple = ()):
  """``fn(*batched, *replicated_args)`` run per device on its rows of the batch.

  For ops XLA cannot partition itself: a Pallas/Mosaic kernel on TPU refuses automatic
  partitioning ("wrap the call in a shard_map"). Inside ``use_mesh`` on more than one
  device this is a ``shard_map`` over *all* mesh axes: every leaf of ``batched`` (leading
  axis = batch) and of the outputs is split over the batch mesh axes, ``replicated_args``
  are whole on every device, and devices that share batch rows (``tensor``) compute the
  same rows. Elsewhere it is a plain call. ``fn`` must treat batch rows independently.
  """
  active = active_mesh()
  if active is None or active[0].size == 1:
    return fn(*batched, *replicated_args)
  mesh, rules = active
  leaves = [x for x in jax.tree.leaves(batched) if np.ndim(x)]
  rows = leaves[0].shape[0] if leaves else 1
  axes = tuple(a for a in batch_axes(mesh, rules) if mesh.shape[a] > 1)
  while axes and rows % math.prod(mesh.shape[a] for a in axes):
    axes = axes[:-1]  # e.g. a batch of 1 at init: every device does the whole batch
  spec = P(axes if len(axes) > 1 else axes[0]) if axes else P()
  in_specs = (jax.tree.map(lambda _: spec, batched),
              jax.tree.map(lambda _: P(), replicated_args))
  shmapped = jax.shard_map(lambda b, r: fn(*b, *r), mesh=mesh, in_specs=in_specs,
                           out_specs=spec, check_vma=False)
  return shmapped(tuple(batched), tuple(replicated_args))


# ---- Batches ------------------------------------------------------------------------------

def batch_axes(mesh: Mesh, rules) -> MeshAxes:
  """The mesh axes the ``batch`` logical axis is sharded over (e.g. ``("data", "fsdp")``)."""
  spec = logical_to_spec(("batch",), rules)
  if not spec or spec[0] is None:
    return ()
  axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  return tuple(a for a in axes if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, rules, ndim: int = 1) -> NamedSharding:
  """Sharding of an array whose leading axis is the batch: ``batch`` -> (data, fsdp)."""
  axes = batch_axes(mesh, rules)
  lead = None if not axes else axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))) if lead else P())


def check_batch_size(global_batch: int, mesh: Mesh, rules) -> None:
  """The global batch must split evenly over the batch mesh axes (and so over processes)."""
  axes = batch_axes(mesh, rules)
  n = math.prod(mesh.shape[a] for a in axes) if axes else 1
  if global_batch % n:
    raise ValueError(f"data.batch_size={global_batch} is not divisible by the {n} batch shards "
                     f"(mesh axes {axes} of {dict(mesh.shape)}); choose a multiple of {n}.")


def to_global_batch(local_batch, mesh: Mesh, rules):
  """Per-process numpy batch -> global ``jax.Array``s sharded over the batch axes.

  Each process passes its own rows (``ds[process_index::process_count]``); the global
  batch is their concatenation in process order.
  """
  def one(x):
    x = np.asarray(x)
    if x.ndim:
      check_batch_size(x.shape[0] * jax.process_count(), mesh, rules)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x)
  return jax.tree.map(one, local_batch)


def process_rows(mesh: Mesh, rules, global_rows: int) -> np.ndarray:
  """Global batch rows holding this process's local rows, in local order (the rows
  ``to_global_batch`` places them at): index a replicated output with it."""
  sharding = batch_sharding(mesh, rules, 1)
  starts = sorted({idx[0].indices(global_rows)[:2]
                   for idx in sharding.addressable_devices_indices_map((global_rows,)).values()})
  return np.concatenate([np.arange(a, b) for a, b in starts]) if starts else np.arange(0)


def gather_rows(local_rows: np.ndarray) -> np.ndarray:
  """Every process's ``[b, ...]`` numpy rows concatenated in process order (``[P * b, ...]``).

  For per-row values computed on the host from a process's own batch rows (e.g. the
  evaluation baselines), so all processes report the same global figure. Identity with
  one process.
  """
  if jax.process_count() == 1:
    return np.asarray(local_rows)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(local_rows), tiled=True))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


# ---- Several processes --------------------------------------------------------------------

_BARRIERS = [0]


def barrier(name: str, timeout_s: float = 3600.0) -> None:
  """Waits until every process reaches this point (coordination service, no collectives).

  A no-op with one process. Processes must call their barriers in the same order.
  """
  if jax.process_count() == 1:
    return
  _BARRIERS[0] += 1
  barrier_id = f"lrm_jax:{name}:{_BARRIERS[0]}"
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  if client is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(barrier_id)
    return
  client.wait_at_barrier(barrier_id, timeout_in_ms=int(timeout_s * 1000))


class _SyncedJit:
  """``jax.jit`` whose every new input signature is compiled on all processes before any
  of them runs it (see ``jit``)."""

  def __init__(self, jitted):
    self._jitted = jitted
    self._compiled = {}

  def __call__(self, *args):
    key = jax.tree.map(lambda x: (np.shape(x), str(getattr(x, "dtype", type(x))),
                                  str(getattr(x, "sharding", None))), args)
    key = (jax.tree.structure(args), tuple(jax.tree.leaves(key)))
    compiled = self._compiled.get(key)
    if compiled is None:
      compiled = self._jitted.lower(*args).compile()
      barrier("compiled")
      self._compiled[key] = compiled
    return compiled(*args)

  def lower(self, *args, **kwargs):
    return self._jitted.lower(*args, **kwargs)


def jit(fn: Callable, **jit_kwargs):
  """``jax.jit(fn, **jit_kwargs)``; with several processes, each new input signature is
  compiled everywhere, then all processes meet at a barrier before running it.

  Compile times differ between hosts (cache hits, load); collectives do not wait forever
  for a late peer (CPU/gloo gives up after 30 s), so the first run of a program must not
  start on one host while another is still compiling it.
  """
  jitted = jax.jit(fn, **jit_kwargs)
  return jitted if jax.process_count() == 1 else _SyncedJit(jitted)


def _tpu_chips_on_host() -> int:
  """TPU chips on this host's PCI bus (0 on CPU/GPU machines); does not start a backend."""
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return int(hardware_utils.num_available_tpu_chips_and_device_id()[0])
  except Exception:  # pylint: disable=broad-except
    return 0


def cluster_environment() -> str | None:
  """Which cluster ``jax.distributed.initialize()`` should auto-detect, or None.

  ``"tpu"``: a Cloud TPU VM (GCE or GKE; single-host slices initialise as one process,
  multi-host slices read the workers from the metadata server / ``TPU_WORKER_HOSTNAMES``);
  ``"slurm"``: inside a multi-task ``srun`` step; ``"auto"``: ``LRM_JAX_DISTRIBUTED=1``
  asks for jax's own detection (Open MPI, Kubernetes ...).
  """
  if os.environ.get("LRM_JAX_DISTRIBUTED", "") == "0":
    return None
  if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES") or \
      os.environ.get("MEGASCALE_COORDINATOR_ADDRESS") or _tpu_chips_on_host() > 0:
    return "tpu"
  if ("SLURM_JOB_ID" in os.environ and "SLURM_STEP_NODELIST" in os.environ
      and int(os.environ.get("SLURM_NTASKS", "1")) > 1):
    return "slurm"
  if os.environ.get("LRM_JAX_DISTRIBUTED", "") == "1":
    return "auto"
  return None


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> bool:
  """Starts ``jax.distributed`` when running on several hosts; returns whether it did.

  Explicit flags (localhost tests, custom clusters) win: all three must be given. Otherwise
  multi-host TPU slices and multi-task SLURM steps are detected from their environment and
  ``jax.distributed.initialize()`` reads coordinator, process count and id from it (one
  process per GPU under ``srun``). A single process needs nothing. Must run before any
  other JAX call.
  """
  if coordinator:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--coordinator={coordinator} needs --num_processes>=1 and "
                       f"0 <= --process_id < num_processes (got {num_processes}, {process_id}).")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True
  if num_processes > 1 or process_id >= 0:
    raise ValueError("--num_processes/--process_id need --coordinator=HOST:PORT.")
  if cluster_environment() is not None:
    jax.distributed.initialize()
    return True
  return False


def shutdown_distributed() -> None:
  """``jax.distributed.shutdown()``, after a barrier when there are several processes."""
  if jax.process_count() > 1:
    barrier("shutdown")
  jax.distributed.shutdown()

"""Device meshes, logical axis rules, multi-host start-up and global batches.

One code path from a laptop CPU to a TPU pod: a mesh ``(data, fsdp, tensor)`` from config
(``-1`` fills an axis with the remaining devices), models that name only *logical* axes
(``batch``, ``embed``, ``mlp``, ``heads`` ...), and a rules table in the config that maps
logical names to mesh axes.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one ``-1`` in ``shape`` so that the product is ``num_devices``."""
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh.shape {tuple(shape)}: at most one axis may be -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh.shape {tuple(shape)} does not divide {num_devices} devices.")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"mesh.shape {tuple(shape)} needs {int(np.prod(shape))} devices; "
                     f"{num_devices} are available.")
  return tuple(shape)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
  """A ``Mesh`` with Auto axis types from ``config.mesh`` (``shape``, ``axes``)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_config.shape, len(devices))
  try:
    from jax.experimental import mesh_utils
    dev_array = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # pylint: disable=broad-except
    dev_array = np.asarray(devices).reshape(shape)
  return Mesh(dev_array, tuple(mesh_config.axes),
              axis_types=(AxisType.Auto,) * len(shape))


def logical_to_spec(logical_axes: Sequence[str | None], rules) -> P:
  """PartitionSpec for logical axis names under ``rules`` (a mesh axis is used once)."""
  return nn.logical_to_mesh_axes(tuple(logical_axes), rules)


def param_shardings(abstract_tree, mesh: Mesh, rules):
  """NamedShardings for a tree of (possibly ``nn.Partitioned``-boxed) abstract values."""
  specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), mesh_specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, rules, ndim: int = 1) -> NamedSharding:
  """Sharding of an array whose leading axis is the batch: ``batch`` -> (data, fsdp)."""
  spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def to_global_batch(local_batch, mesh: Mesh, rules):
  """Per-process numpy batch -> global ``jax.Array``s sharded over the batch axis."""
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x)
  return jax.tree.map(one, local_batch)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def maybe_initialize_distributed(coordinator: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> None:
  """Starts ``jax.distributed`` when running on several hosts.

  Explicit flags (localhost tests, custom clusters) win; otherwise TPU pods and SLURM are
  detected from their environment, and a single process needs nothing.
  """
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif ("TPU_WORKER_HOSTNAMES" in os.environ or "SLURM_JOB_ID" in os.environ
        and int(os.environ.get("SLURM_NTASKS", "1")) > 1):
    jax.distributed.initialize()

"""Test-session settings: a persistent XLA compilation cache shared by the test processes,
and the CPU backend on hosts without accelerators.

requirements-test.txt installs libtpu (the TPU compiler that tests/test_aot.py and
tests/test_kernel_lowering.py use to compile for TPU topologies on a CPU-only host). With
libtpu importable, jax tries the TPU backend in every process, and the first process to do
so holds libtpu's lockfile (/tmp/libtpu_lockfile) for its lifetime: the compile subprocesses
then fail with "Internal error when accessing libtpu multi-process lockfile". On a host
with no TPU or GPU device files, the test processes (and the subprocesses they start,
which inherit the environment) therefore use the CPU backend only; those compile
subprocesses load libtpu explicitly. Set JAX_PLATFORMS yourself to override.
"""

import glob
import importlib.util
import os
import tempfile

_CACHE = os.path.join(tempfile.gettempdir(), "lrm_jax_test_xla_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def _has_accelerator_devices() -> bool:
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or
              glob.glob("/dev/nvidia[0-9]*"))


if importlib.util.find_spec("libtpu") is not None and not _has_accelerator_devices():
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

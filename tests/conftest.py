"""Test-session settings: a persistent XLA compilation cache shared by the test processes."""

import os
import tempfile

_CACHE = os.path.join(tempfile.gettempdir(), "lrm_jax_test_xla_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

"""How every ``python -m lrm_jax.*`` command ends on the library's own errors.

A :class:`~lrm_jax.errors.ConfigError` or :class:`~lrm_jax.errors.DataError` (or a missing
file) is the user's to fix, not a bug: the command prints one line, ``<prog>: error:
<message>`` (the message names the file, field or key and the fix), and exits with status
2, without a traceback. ``--debug`` shows the traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags

from lrm_jax.errors import ConfigError, DataError

USER_ERRORS = (ConfigError, DataError, FileNotFoundError)

flags.DEFINE_bool("debug", False, "show the traceback of configuration and data errors")


def program_name() -> str:
  """``python -m lrm_jax.x`` for the running command."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return f"python -m {spec.name}" if spec is not None else os.path.basename(sys.argv[0])


def report_user_errors(main: Callable, prog: str | None = None) -> Callable:
  """``main`` wrapped: user errors print one line and exit 2 (unless ``--debug``)."""

  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if flags.FLAGS.is_parsed() and flags.FLAGS.debug:
        raise
      print(f"{prog or program_name()}: error: {e}", file=sys.stderr)
      sys.exit(2)

  return wrapped


def run(main: Callable, flags_parser: Callable | None = None) -> None:
  """``absl.app.run`` with :func:`report_user_errors`."""
  kwargs = {} if flags_parser is None else {"flags_parser": flags_parser}
  app.run(report_user_errors(main), **kwargs)

"""The library's own error types: one for configuration problems, one for data problems.

Commands catch these and print one line (the message names the file, field or key and the
fix); anything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
  """A config key, value or config file is wrong (the message names the key and the fix)."""


class DataError(ValueError):
  """An input file or array is unusable (the message names the file, field or shape)."""

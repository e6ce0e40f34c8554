"""Parsing one config value from text, typed by the value it replaces (one rule for all).

Used by ``--config.key=value`` overrides (:mod:`lrm_jax.config_loading`) and by a config
file's own argument (``configs/grm.py:variant=paper,runlocal=True``).
"""

from __future__ import annotations

import ast

from lrm_jax.errors import ConfigError

TRUE = ("1", "true", "t", "yes", "y", "on")
FALSE = ("0", "false", "f", "no", "n", "off")


def parse_value(key: str, text: str, current):
  """``text`` as the type of ``current``: strict booleans, ints, floats, tuples, strings.

  Raises ``ConfigError`` naming ``key`` when ``text`` is not a value of that type
  (``ture`` is not a boolean).
  """
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in TRUE:
      return True
    if low in FALSE:
      return False
    raise ConfigError(f"config key {key!r}: expected a boolean ({'/'.join(TRUE[:3])} or "
                      f"{'/'.join(FALSE[:3])}), got {text!r}.")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      pass
    try:  # "1e3" or "100.0" for an integer key, when the value is whole
      value = float(text)
      if value.is_integer():
        return int(value)
    except ValueError:
      pass
    raise ConfigError(f"config key {key!r}: expected an integer, got {text!r}.")
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"config key {key!r}: expected a number, got {text!r}.") from None
  if isinstance(current, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ConfigError(f"config key {key!r}: expected a tuple such as (1, 2), got "
                        f"{text!r}.") from None
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  return text

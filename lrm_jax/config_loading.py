"""Load ``configs/X.py[:args]`` outside absl (tools, tests), with ``key=value`` overrides."""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:arg]`` and applies ``["a.b=1", ...]`` overrides.

  Relative paths are tried from the working directory, then from the repository root.
  Overrides must name existing keys (a typo raises ``KeyError``).
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path) and os.path.isfile(os.path.join(_REPO, path)):
    path = os.path.join(_REPO, path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} not found (from --config={spec!r}).")
  mod_spec = importlib.util.spec_from_file_location(
      "lrm_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:
    key, _, text = item.partition("=")
    apply_override(config, key.strip(), text)
  return config


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets ``config.<dotted>`` from a string, parsed with the type of the current value."""
  node = config
  parts = dotted.split(".")
  for p in parts[:-1]:
    if p not in node:
      raise KeyError(f"unknown config key {dotted!r}: {p!r} is not in the config.")
    node = node[p]
  leaf = parts[-1]
  if leaf not in node:
    raise KeyError(f"unknown config key {dotted!r}.")
  current = node[leaf]
  if isinstance(current, bool):
    value = text.strip().lower() in ("1", "true", "yes", "on", "t")
  elif isinstance(current, (int, float)) and not isinstance(current, bool):
    value = type(current)(float(text)) if isinstance(current, int) and "." in text else type(current)(text)
  elif isinstance(current, (tuple, list)):
    value = tuple(ast.literal_eval(text))
  else:
    value = text
  node[leaf] = value

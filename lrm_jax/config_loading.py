"""The one config mechanism of every command: ``--config=FILE.py[:arg]`` plus
``--config.key=value`` overrides.

  python -m lrm_jax.main --config=configs/grm.py:tiny --workdir=W --config.total_steps=50

Overrides are typed by the value they replace (:mod:`lrm_jax.config_values`: strict
booleans), and an unknown key raises :class:`~lrm_jax.errors.ConfigError` naming the key
and the nearest valid one. Commands parse their other flags with absl and hand this
module's :func:`flags_parser` to ``app.run``; commands that read a run's saved config
(``evaluate``, ``reconstruct``) take only the overrides.
"""

from __future__ import annotations

import difflib
import importlib.util
import os

import ml_collections

from lrm_jax.config_values import parse_value
from lrm_jax.errors import ConfigError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PREFIX = "--config."


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:arg]`` and applies ``["a.b=1", ...]`` overrides.

  Relative paths are tried from the working directory, then from the repository root.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path) and os.path.isfile(os.path.join(_REPO, path)):
    path = os.path.join(_REPO, path)
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} not found (from --config={spec!r}).")
  mod_spec = importlib.util.spec_from_file_location(
      "lrm_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config(arg) function.")
  config = module.get_config(arg or None)
  apply_overrides(config, overrides)
  return config


def dotted_keys(config, prefix: str = "") -> list[str]:
  """Every leaf key of ``config`` as ``a.b.c``."""
  keys = []
  for k, v in config.items():
    name = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(dotted_keys(v, name + "."))
    else:
      keys.append(name)
  return keys


def _unknown_key(config, dotted: str) -> ConfigError:
  near = difflib.get_close_matches(dotted, dotted_keys(config), n=1, cutoff=0.5)
  hint = f" Did you mean {near[0]!r}?" if near else ""
  return ConfigError(f"unknown config key {dotted!r}.{hint}")


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets ``config.<dotted>`` from a string, parsed with the type of the current value."""
  node = config
  parts = dotted.split(".")
  for p in parts[:-1]:
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise _unknown_key(config, dotted)
    node = node[p]
  leaf = parts[-1]
  if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
    raise _unknown_key(config, dotted)
  node[leaf] = parse_value(dotted, text, node[leaf])


def apply_overrides(config, overrides) -> None:
  """Applies ``["a.b=1", ...]`` in order."""
  for item in overrides:
    key, eq, text = item.partition("=")
    if not eq:
      raise ConfigError(f"override {item!r} is not key=value (--config.{key}=VALUE).")
    apply_override(config, key.strip(), text)


def split_config_args(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
  """``argv -> (other args, --config spec or None, ["key=value", ...])``.

  Accepts ``--config=SPEC``, ``--config SPEC``, ``--config.key=value`` and
  ``--config.key value``.
  """
  rest, spec, overrides = [], None, []
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
      i += 2
      continue
    if a.startswith("--config="):
      spec = a[len("--config="):]
    elif a.startswith(_PREFIX):
      body = a[len(_PREFIX):]
      if "=" not in body and i + 1 < len(argv):
        body = f"{body}={argv[i + 1]}"
        i += 1
      overrides.append(body)
    else:
      rest.append(a)
    i += 1
  return rest, spec, overrides


class _Parsed:
  spec: str | None = None
  overrides: list[str] = []


_PARSED = _Parsed()


def define_config_flag(required: bool = True) -> None:
  """Lists ``--config`` in the command's ``--help`` (the value itself is taken out of the
  command line by :func:`flags_parser`)."""
  from absl import flags
  flags.DEFINE_string(
      "config", None, ("(required) " if required else "") +
      "config file[:arg], e.g. configs/grm.py:tiny; override any key with "
      "--config.KEY=VALUE (typed by its default; unknown keys fail naming the nearest)")


def flags_parser(argv: list[str]) -> list[str]:
  """An absl ``flags_parser``: takes the config arguments out, absl parses the rest."""
  from absl import flags
  rest, spec, overrides = split_config_args(list(argv))
  _PARSED.spec, _PARSED.overrides = spec, overrides
  return flags.FLAGS(rest)


def config_overrides() -> list[str]:
  """The ``--config.key=value`` overrides of this command line (after ``flags_parser``)."""
  return list(_PARSED.overrides)


def config_from_command_line(required: bool = True) -> ml_collections.ConfigDict | None:
  """The ``--config`` file of this command line with its overrides applied."""
  if _PARSED.spec is None:
    if required:
      raise ConfigError("--config is required: --config=configs/<family>.py[:variant], "
                        "for example --config=configs/grm.py:tiny.")
    if _PARSED.overrides:
      raise ConfigError("--config.KEY=VALUE overrides need --config=FILE.")
    return None
  config = load_config(_PARSED.spec, _PARSED.overrides)
  config.lock()  # code may change values but not add keys: a typo fails loudly
  return config

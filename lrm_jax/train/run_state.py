"""A workdir's run state is never lost or silently replaced.

- :class:`WorkdirLock`: one training process (group) per workdir. A lock file holds the
  host and pid of its owner; a second process fails at once, naming them, and a lock left
  by a process that is gone from this host is taken over (said once). Under several
  processes only process 0 takes it: every host shares the workdir.
- :func:`record_config`: ``config.json`` is written once, by the run that starts the
  workdir. A resumed run whose config differs writes ``config.<step>.json`` and says which
  keys changed.
- :func:`trim_metrics`: a resumed run redoes the steps after its checkpoint; their rows are
  dropped from ``metrics.jsonl`` first, so each step appears once.
"""

from __future__ import annotations

import json
import os
import socket
import time

from lrm_jax.errors import ConfigError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """``with WorkdirLock(workdir):`` holds ``workdir/.lock`` (see the module docstring)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.enabled = enabled
    self.held = False

  def _owner(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def acquire(self) -> None:
    if not self.enabled:
      return
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._owner()
        stale = owner.get("host") == me["host"] and not _pid_alive(int(owner.get("pid", -1)))
        if not owner or stale:  # a crashed run (or a half-written lock): take it over
          print(f"note: removing the stale lock {self.path} of pid {owner.get('pid', '?')} "
                f"(no such process on this host).")
          os.remove(self.path)
          continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
        raise ConfigError(
            f"workdir {os.path.dirname(self.path)} is in use by pid {owner.get('pid')} on "
            f"host {owner.get('host')} (since {since}). Wait for it, or use another "
            f"--workdir; if that process is gone, delete {self.path}.")
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return

  def release(self) -> None:
    if self.held:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
      self.held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


def _flat(node, prefix: str = "") -> dict:
  out = {}
  for k, v in node.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def changed_keys(old: dict, new: dict) -> list[str]:
  """Dotted keys whose values differ between two configs (as JSON dicts)."""
  a, b = _flat(old), _flat(new)
  return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def record_config(config, workdir: str, resume_step: int | None) -> str | None:
  """Writes ``config.json`` for a new run, or ``config.<step>.json`` for a resumed run whose
  config changed (returns its path and prints the changed keys); else nothing."""
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  path = os.path.join(workdir, "config.json")
  if resume_step is None or not os.path.isfile(path):
    with open(path, "w") as f:
      f.write(text)
    return path
  with open(path) as f:
    old = json.load(f)
  keys = changed_keys(old, json.loads(text))
  if not keys:
    return None
  record = os.path.join(workdir, f"config.{resume_step}.json")
  with open(record, "w") as f:
    f.write(text)
  print(f"note: resuming at step {resume_step} with a changed config ({', '.join(keys)}); "
        f"recorded in {record}, config.json keeps the original.")
  return record


def trim_metrics(workdir: str, step: int) -> int:
  """Drops the rows of ``metrics.jsonl`` after ``step`` (atomically); returns how many."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row_step = int(json.loads(line).get("step", 0))
    except ValueError:
      continue  # a line cut short by a crash
    if row_step <= step:
      keep.append(line if line.endswith("\n") else line + "\n")
  if len(keep) == len(lines):
    return 0
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(keep)
  os.replace(tmp, path)
  return len(lines) - len(keep)


def read_summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)

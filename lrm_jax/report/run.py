"""What a training workdir holds, read for a report (README "What a run writes").

:func:`read_run` needs ``W/metrics.jsonl``; everything else (``config.json``,
``summary.json``, ``eval.json``, ``compile.json``, ``eval/step_*.png``, videos) may be
missing, and :class:`Run` says what is. :func:`headline` is one run's row of the
comparison table.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import statistics

from lrm_jax.errors import DataError

VIDEO_EXTS = (".mp4", ".gif", ".webm")
_SKIP_DIRS = ("checkpoints", "checkpoints.unreadable", "tensorboard")


@dataclasses.dataclass
class Run:
  """One workdir's records. ``train`` / ``evals``: the rows of ``metrics.jsonl`` with a
  ``loss`` / with ``eval_*`` keys (the ``eval_`` prefix kept), in file order."""

  workdir: str
  config: dict | None
  train: list[dict]
  evals: list[dict]
  summary: dict | None = None
  eval_json: dict | None = None
  compile: dict | None = None
  eval_grid: str | None = None  # the newest eval/step_*.png
  videos: list[str] = dataclasses.field(default_factory=list)  # newest first

  @property
  def name(self) -> str:
    """``family-variant`` (from the config or summary) and the workdir's name."""
    meta = self.config or self.summary or {}
    fam = f"{meta.get('family', '?')}-{meta.get('variant', '?')}"
    return f"{fam} ({os.path.basename(os.path.normpath(self.workdir))})"


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise DataError(f"{path}: not valid JSON ({e}).") from None


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
  """``(train rows, eval rows)`` of a ``metrics.jsonl``; a bad line is a ``DataError``
  naming the file and line (a last line cut short by a running writer is skipped)."""
  train, evals = [], []
  with open(path) as f:
    lines = f.read().split("\n")
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError as e:
      if i >= len(lines) - 2:  # the row being written right now
        continue
      raise DataError(f"{path}:{i + 1}: not a JSON object ({e}).") from None
    if not isinstance(row, dict):
      raise DataError(f"{path}:{i + 1}: expected a JSON object, got {type(row).__name__}.")
    if any(k.startswith("eval_") for k in row):
      evals.append(row)
    elif "loss" in row:
      train.append(row)
  return train, evals


def find_videos(workdir: str) -> list[str]:
  """Videos under ``workdir`` (e.g. ``reconstruct``'s or ``view``'s turntables), newest
  first; checkpoints and TensorBoard folders are not searched."""
  found = []
  for dirpath, dirnames, files in os.walk(workdir):
    dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
    found += [os.path.join(dirpath, f) for f in files if f.lower().endswith(VIDEO_EXTS)]
  return sorted(found, key=lambda p: (-os.path.getmtime(p), p))


def read_run(workdir: str) -> Run:
  """Reads ``workdir``; a missing folder or ``metrics.jsonl`` is a ``FileNotFoundError``
  naming the path."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist (or is not a folder).")
  metrics = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(metrics):
    raise FileNotFoundError(f"{metrics} not found: is {workdir} a training workdir "
                            "(python -m lrm_jax.main --workdir=...)? A run writes it from "
                            "its first logged step.")
  train, evals = read_metrics(metrics)
  grids = sorted(glob.glob(os.path.join(workdir, "eval", "step_*.png")))
  return Run(workdir=workdir, config=_read_json(os.path.join(workdir, "config.json")),
             train=train, evals=evals,
             summary=_read_json(os.path.join(workdir, "summary.json")),
             eval_json=_read_json(os.path.join(workdir, "eval.json")),
             compile=_read_json(os.path.join(workdir, "compile.json")),
             eval_grid=grids[-1] if grids else None, videos=find_videos(workdir))


def step_rate(run: Run) -> float | None:
  """Median ``steps_per_s`` of the logged train rows after the first (the first includes
  compilation)."""
  rates = [r["steps_per_s"] for r in run.train[1:] if "steps_per_s" in r]
  return statistics.median(rates) if rates else None


def final_eval(run: Run) -> dict | None:
  """The last evaluation: ``eval.json`` if it scores the newest step, else the last eval
  row of ``metrics.jsonl`` (keys without the ``eval_`` prefix; ``step`` included)."""
  last = None
  if run.evals:
    row = run.evals[-1]
    last = {k[5:]: v for k, v in row.items() if k.startswith("eval_")}
    last["step"] = row.get("step", last.get("step"))
  ej = run.eval_json
  if ej and (last is None or (ej.get("checkpoint_step") or ej.get("step") or 0)
             >= (last.get("step") or 0)):
    return dict(ej, step=ej.get("checkpoint_step", ej.get("step")))
  return last


def headline(run: Run) -> dict:
  """One run's comparison row: ``{column: value or None}`` (the same columns for every
  family)."""
  ev = final_eval(run) or {}
  psnr, base = ev.get("psnr"), ev.get("baseline_psnr")
  comp = run.compile or {}
  summary = run.summary or {}
  steps = run.train[-1]["step"] if run.train else None
  return {
      "run": run.name, "steps": steps, "params": summary.get("n_params"),
      "eval step": ev.get("step"), "PSNR": psnr, "SSIM": ev.get("ssim"),
      "LPIPS": ev.get("lpips"), "baseline PSNR": base,
      "PSNR - baseline": psnr - base if psnr is not None and base is not None else None,
      "last train loss": run.train[-1]["loss"] if run.train else None,
      "steps/s": step_rate(run),
      "compile s": comp.get("compile_s"),
      "peak MiB": comp["peak_bytes"] / 2 ** 20 if "peak_bytes" in comp else None,
      "wall s": summary.get("wall_s"),
  }

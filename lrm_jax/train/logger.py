"""Metrics out: JSON lines, TensorBoard events and a progress bar (process 0 only), and
``compile.json``: the compiled train step's memory and compile time."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np


def compiled_memory(compiled) -> dict:
  """Per-device memory (bytes) of a compiled SPMD step: ``argument``, ``output``, ``alias``,
  ``temp``, ``generated_code`` and ``peak_bytes`` = arguments + outputs - aliased (donated
  state is reused for the new state) + temporaries + generated code: what must fit in one
  chip's memory."""
  mem = compiled.memory_analysis()
  if mem is None:
    raise ValueError("this backend reports no memory analysis of compiled programs.")
  out = {k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  out["peak_bytes"] = (out["argument"] + out["output"] - out["alias"] + out["temp"]
                       + out["generated_code"])
  return out


def compile_stats(compiled, seconds: float) -> dict:
  """Per-device memory (bytes, :func:`compiled_memory`) of a compiled step and the seconds
  it took to compile. Memory fields are absent where the backend does not report them."""
  out = {"compile_s": round(float(seconds), 3), "num_devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind}
  try:
    mem = compiled_memory(compiled)
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    mem = None
  if mem is not None:
    out.update({k if k == "peak_bytes" else f"{k}_bytes": v for k, v in mem.items()})
  return out


class MetricLogger:
  """Writes ``metrics.jsonl`` and TensorBoard events; shows steps/s, images/s and ETA."""

  def __init__(self, workdir: str, config, start_step: int, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self.config = config
    self.eval_curve: list[dict] = []
    self._last_time = time.time()
    self._last_step = start_step
    self._file = None
    self._tb = None
    self._bar = None
    if not enabled:
      return
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self._tb = None
    if config.progress_bar:
      from tqdm import tqdm
      self._bar = tqdm(total=config.total_steps, initial=start_step, unit="step",
                       dynamic_ncols=True, file=sys.stderr, desc=f"{config.family}-{config.variant}")

  def write_train(self, step: int, host_metrics: dict, images_per_step: int) -> None:
    if not self.enabled:
      return
    now = time.time()
    steps = max(step - self._last_step, 1)
    rate = steps / max(now - self._last_time, 1e-9)
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(loss=f"{float(host_metrics['loss']):.4f}",
                            psnr=f"{float(host_metrics['psnr']):.2f}",
                            steps_s=f"{rate:.2f}", img_s=f"{rate * images_per_step:.1f}",
                            refresh=False)
    if step % self.config.log_every and step != self.config.total_steps and step != 1:
      return
    self._last_time, self._last_step = now, step
    row = {"step": int(step)}
    for k, v in host_metrics.items():
      if k == "finite":
        continue
      row[k] = float(np.asarray(v))
    row["steps_per_s"] = rate
    row["images_per_s"] = rate * images_per_step
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step":
          self._tb.add_scalar(f"train/{k}", v, step)

  def write_eval(self, step: int, result: dict) -> None:
    point = {"step": int(step), "psnr": result["psnr"], "ssim": result["ssim"],
             "baseline_psnr": result["baseline_psnr"]}
    self.eval_curve.append(point)
    if not self.enabled:
      return
    self._file.write(json.dumps({"step": int(step), **{f"eval_{k}": v for k, v in result.items()
                                                       if isinstance(v, (int, float))}}) + "\n")
    self._file.flush()
    msg = (f"eval @ {step}: psnr {result['psnr']:.2f} dB, ssim {result['ssim']:.3f} "
           f"(baseline {result['baseline_psnr']:.2f} dB) on {result['num_scenes']} scenes")
    if self._bar is not None:
      self._bar.write(msg)
    else:
      print(msg)
    if self._tb is not None:
      for k in ("psnr", "ssim", "baseline_psnr"):
        self._tb.add_scalar(f"eval/{k}", result[k], step)

  def write_compile(self, stats: dict) -> None:
    """Writes ``compile.json`` (:func:`compile_stats` of the train step)."""
    if not self.enabled:
      return
    with open(os.path.join(self.workdir, "compile.json"), "w") as f:
      json.dump(stats, f, indent=2)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()

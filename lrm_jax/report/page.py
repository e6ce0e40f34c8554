"""One self-contained HTML page of one or more runs: every image and video is embedded as
a ``data:`` URI and every chart is inline SVG, so the file opens anywhere, offline.

Per run: the config, loss and PSNR curves, the evaluation table with the baselines, the
newest eval grid, the turntable video, and compile memory and step time; with several
runs, a comparison table first (one row a run, the same columns for every family). What a
run lacks is said, not skipped silently.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os

from lrm_jax.report import run as run_lib
from lrm_jax.report import svg

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif",
         ".mp4": "video/mp4", ".webm": "video/webm"}
_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 19px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; white-space: nowrap; }
table.comparison { display: block; overflow-x: auto; max-width: 100%; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.missing { color: #a60; font-style: italic; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; overflow: auto; max-height: 420px; }
img.grid { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
video { width: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
.chart { font-family: sans-serif; }
"""
# Evaluation columns shown first (without the eval_ prefix), then any others a family adds.
_EVAL_COLUMNS = ("psnr", "ssim", "lpips", "baseline_psnr", "baseline_background_psnr",
                 "baseline_nearest_view_psnr", "num_scenes")
_NOT_COLUMNS = ("step", "num_views", "checkpoint_step", "split", "source")


def data_uri(path: str) -> str:
  """``path``'s bytes as a ``data:`` URI (type from the extension)."""
  mime = _MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
  with open(path, "rb") as f:
    return f"data:{mime};base64,{base64.b64encode(f.read()).decode('ascii')}"


def fmt(value, digits: int = 4) -> str:
  """A table cell: numbers to ``digits`` significant figures, None as a dash."""
  if value is None:
    return "&ndash;"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return f"{value:,}"
  if isinstance(value, float):
    return f"{value:,.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
  return html.escape(str(value))


def table(header: list[str], rows: list[list], text_columns: int = 1,
          cls: str = "") -> str:
  """An HTML table; the first ``text_columns`` columns are left-aligned text."""
  th = "".join(f'<th class="{"text" if i < text_columns else ""}">{html.escape(h)}</th>'
               for i, h in enumerate(header))
  body = "".join("<tr>" + "".join(
      f'<td class="{"text" if i < text_columns else ""}">{fmt(v)}</td>'
      for i, v in enumerate(r)) + "</tr>" for r in rows)
  return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def missing(text: str) -> str:
  return f'<p class="missing">{html.escape(text)}</p>'


def comparison(runs: list[run_lib.Run]) -> str:
  """The comparison table: one row a run, :func:`run_lib.headline`'s columns."""
  rows = [run_lib.headline(r) for r in runs]
  header = list(rows[0])
  return table(header, [[r[h] for h in header] for r in rows], text_columns=1,
               cls="comparison")


def curves(run: run_lib.Run) -> str:
  """Loss and PSNR against steps (train rows; eval PSNR and its baseline as markers)."""
  step = lambda r: r.get("step", r.get("eval_step"))
  loss = [svg.Series("train loss", [(r["step"], r["loss"]) for r in run.train])]
  psnr = [svg.Series("train PSNR", [(r["step"], r["psnr"]) for r in run.train
                                    if "psnr" in r])]
  psnr.append(svg.Series("eval PSNR", [(step(r), r["eval_psnr"]) for r in run.evals
                                       if "eval_psnr" in r], markers=True))
  psnr.append(svg.Series("eval baseline", [(step(r), r["eval_baseline_psnr"])
                                           for r in run.evals if "eval_baseline_psnr" in r],
                         dashed=True, markers=True))
  return ('<div class="charts">' + svg.line_chart(loss, "loss", "step", "loss", width=520)
          + svg.line_chart(psnr, "PSNR", "step", "dB", width=520, log_y=False) + "</div>")


def eval_table(run: run_lib.Run) -> str:
  """Every evaluation (``metrics.jsonl`` rows, then ``eval.json``) with its baselines."""
  rows = [dict({k[5:]: v for k, v in r.items() if k.startswith("eval_")},
               step=r.get("step"), what="during training") for r in run.evals]
  if run.eval_json:
    ej = run.eval_json
    rows.append(dict(ej, step=ej.get("checkpoint_step", ej.get("step")),
                     what=f"evaluate ({ej.get('split', 'eval')} split, "
                          f"{ej.get('source', '?')})"))
  if not rows:
    return missing("No evaluation yet: the run has not reached its first eval_every "
                   "step, and there is no eval.json (python -m lrm_jax.evaluate).")
  extra = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float))
                  and k not in _EVAL_COLUMNS and k not in _NOT_COLUMNS})
  cols = [c for c in _EVAL_COLUMNS if any(c in r for r in rows)] + extra
  for r in rows:
    if r.get("psnr") is not None and r.get("baseline_psnr") is not None:
      r["psnr - baseline"] = r["psnr"] - r["baseline_psnr"]
  if "psnr" in cols:
    cols.insert(1, "psnr - baseline")
  return table(["what", "step"] + cols, [[r["what"], r.get("step")] + [r.get(c) for c in cols]
                                         for r in rows], text_columns=1, cls="evals")


def cost(run: run_lib.Run) -> str:
  """Compile memory and time, step rate and wall time."""
  c, s = run.compile or {}, run.summary or {}
  rate = run_lib.step_rate(run)
  images = [r["images_per_s"] for r in run.train[1:] if "images_per_s" in r]
  mib = lambda k: c[k] / 2 ** 20 if k in c else None
  rows = [["steps/s (median, compile excluded)", rate],
          ["images/s (median)", sorted(images)[len(images) // 2] if images else None],
          ["wall time s (summary.json)", s.get("wall_s")],
          ["parameters", s.get("n_params")]]
  if not c:
    return table(["", "value"], rows, cls="cost") + missing(
        f"No compile.json in {run.workdir}: the run predates it, or has not compiled its "
        "step yet; no compile memory or time.")
  rows += [["train step compile s", c.get("compile_s")],
           ["peak memory per device MiB", mib("peak_bytes")],
           ["  arguments MiB", mib("argument_bytes")], ["  temporaries MiB", mib("temp_bytes")],
           ["  outputs MiB", mib("output_bytes")],
           ["  aliased (donated) MiB", mib("alias_bytes")],
           ["devices", f"{c.get('num_devices')} x {c.get('device_kind')}"]]
  return table(["", "value"], rows, cls="cost")


def config_block(run: run_lib.Run) -> str:
  if run.config is None:
    return missing(f"No config.json in {run.workdir}.")
  c, d = run.config, run.config.get("data", {})
  keys = [["family", c.get("family")], ["variant", c.get("variant")],
          ["total_steps", c.get("total_steps")], ["data.source", d.get("source")],
          ["data.batch_size", d.get("batch_size")], ["data.input_size", d.get("input_size")],
          ["data.num_input_views", d.get("num_input_views")]]
  full = html.escape(json.dumps(c, indent=2, sort_keys=True))
  return (table(["key", "value"], keys, text_columns=2, cls="config")
          + f"<details><summary>config.json</summary><pre>{full}</pre></details>")


def _shown_width(path: str, target: int = 768) -> int:
  """A width for a small image: whole multiples of its own (crisp pixels), up to 4x, about
  ``target`` pixels."""
  from PIL import Image
  with Image.open(path) as im:
    w = im.width
  return w * max(1, min(4, target // max(w, 1)))


def media(run: run_lib.Run) -> str:
  """The newest eval grid and the newest video, embedded."""
  out = ["<h3>Eval grid</h3>"]
  if run.eval_grid:
    out.append(f"<p>{html.escape(os.path.relpath(run.eval_grid, run.workdir))}: per "
               "held-out scene, inputs | predictions | targets</p>"
               f'<img class="grid" alt="eval grid" width="{_shown_width(run.eval_grid)}" '
               f'src="{data_uri(run.eval_grid)}">')
  else:
    out.append(missing("No eval grid (eval/step_*.png) yet."))
  out.append("<h3>Turntable</h3>")
  if run.videos:
    v = run.videos[0]
    rel = html.escape(os.path.relpath(v, run.workdir))
    tag = (f'<img alt="turntable" src="{data_uri(v)}">' if v.endswith(".gif") else
           f'<video controls autoplay loop muted playsinline src="{data_uri(v)}"></video>')
    others = ", ".join(html.escape(os.path.relpath(o, run.workdir)) for o in run.videos[1:])
    out.append(f"<p>{rel}{' (also: ' + others + ')' if others else ''}</p>{tag}")
  else:
    out.append(missing(f"No video under {run.workdir} (python -m lrm_jax.view "
                       f"--workdir={run.workdir} or python -m lrm_jax.reconstruct "
                       f"--out={run.workdir}/... writes a turntable)."))
  return "".join(out)


def run_section(run: run_lib.Run, index: int) -> str:
  """Everything about one run."""
  return (f'<section class="run" id="run{index}"><h2>{html.escape(run.name)}</h2>'
          f"<p>{html.escape(os.path.abspath(run.workdir))}</p>"
          + (curves(run) if run.train else missing("No train rows in metrics.jsonl yet."))
          + "<h3>Evaluation</h3>" + eval_table(run)
          + "<h3>Compile memory and step time</h3>" + cost(run)
          + media(run) + "<h3>Config</h3>" + config_block(run) + "</section>")


def render(runs: list[run_lib.Run]) -> str:
  """The whole page."""
  title = "lrm_jax report: " + ", ".join(r.name for r in runs)
  when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1><p>Written {when} by python -m lrm_jax.report.</p>",
           "<h2>Comparison</h2>" + comparison(runs)]
  if len(runs) > 1:
    series = [svg.Series(r.name, [(r2.get("step"), r2["eval_psnr"]) for r2 in r.evals
                                  if "eval_psnr" in r2], markers=True) for r in runs]
    parts.append(svg.line_chart(series, "eval PSNR, all runs", "step", "dB",
                                width=720, log_y=False))
  parts += [run_section(r, i) for i, r in enumerate(runs)]
  parts.append("</body></html>")
  return "\n".join(parts)

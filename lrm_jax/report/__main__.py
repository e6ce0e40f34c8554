"""Write a run's report: one self-contained HTML file (charts, tables, images, video).

  python -m lrm_jax.report --workdir=W [--workdir=W2 ...] [--out=FILE.html]

Writes ``W/report.html`` (with several workdirs, the first one's, or ``--out``): the
config, loss and PSNR curves, the evaluations with their baselines, the newest eval grid,
a turntable video if the workdir has one, compile memory and step time; with several
workdirs, a comparison table first, one row a run. Everything is embedded (no external
files or URLs). A missing workdir or ``metrics.jsonl`` is an error naming the path; other
missing pieces are said in the page.
"""

from __future__ import annotations

import os

from absl import flags

from lrm_jax import cli
from lrm_jax.report import page
from lrm_jax.report import run as run_lib


def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports
  anywhere)."""
  flags.DEFINE_multi_string("workdir", None, "training workdir(s); repeat to compare runs")
  flags.DEFINE_string("out", None, "the HTML file (default: FIRST_WORKDIR/report.html)")
  flags.mark_flag_as_required("workdir")


def write_report(workdirs: list[str], out: str | None = None) -> str:
  """Reads every workdir, writes the page and returns its path."""
  runs = [run_lib.read_run(w) for w in workdirs]
  out = out or os.path.join(workdirs[0], "report.html")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(page.render(runs))
  return out


def main(argv):
  del argv
  path = write_report(flags.FLAGS.workdir, flags.FLAGS.out)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)

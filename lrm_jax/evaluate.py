"""Evaluate a trained run on held-out scenes: PSNR / SSIM / LPIPS vs trivial baselines.

  python -m lrm_jax.evaluate --workdir=DIR [--split=eval|test] [--config.data.source=SPEC]

Prints a table and writes ``DIR/eval.json`` (and ``DIR/eval/eval_<split>.png``).
Overrides apply to the run's own config (``DIR/config.json``).
"""

from __future__ import annotations

import os

from absl import flags, logging

from lrm_jax import cli, config_loading



def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports
  anywhere)."""
  flags.DEFINE_string("workdir", None, "training workdir (config.json + checkpoints)")
  flags.DEFINE_enum("split", "eval", ["eval", "test"], "held-out split to score")
  flags.mark_flag_as_required("workdir")


def evaluate(workdir: str, split: str = "eval", overrides=()) -> dict:
  from lrm_jax.train import evaluation, inference, losses
  config = inference.load_run_config(workdir)
  config_loading.apply_overrides(config, overrides)
  run = inference.load_trained(workdir, config)
  perceptual = losses.Perceptual.from_config(config)
  ev = evaluation.Evaluator(config, run.model, run.program.mesh, run.program.rules, workdir,
                            perceptual, split=split, spec=run.family.batch_spec(config),
                            extra_metrics=run.family.eval_metrics, grid_name=f"eval_{split}")
  result = ev.run(run.params, run.step)
  result.update(split=split, source=config.data.source, checkpoint_step=run.step)
  evaluation.write_eval_json(workdir, result)
  return result


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  overrides = config_loading.config_overrides()
  workdir = flags.FLAGS.workdir
  r = evaluate(workdir, flags.FLAGS.split, overrides)
  rows = [("PSNR (dB)", f"{r['psnr']:.2f}"), ("SSIM", f"{r['ssim']:.4f}"),
          ("LPIPS", "n/a (no weights)" if r["lpips"] is None else f"{r['lpips']:.4f}"),
          ("baseline PSNR", f"{r['baseline_psnr']:.2f}"),
          ("  background only", f"{r['baseline_background_psnr']:.2f}"),
          ("  nearest input view", f"{r['baseline_nearest_view_psnr']:.2f}"),
          ("scenes", str(r["num_scenes"])), ("checkpoint step", str(r["checkpoint_step"]))]
  w = max(len(k) for k, _ in rows)
  print(f"{'metric':<{w}} | value\n{'-' * w}-|------")
  for k, v in rows:
    print(f"{k:<{w}} | {v}")
  print(f"wrote {os.path.join(workdir, 'eval.json')} and "
        f"{os.path.join(workdir, 'eval', f'eval_{flags.FLAGS.split}.png')}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main, flags_parser=config_loading.flags_parser)

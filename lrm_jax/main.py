"""Train (with periodic evaluation) a model family.

  python -m lrm_jax.main --config=configs/grm.py:tiny --workdir=workdirs/grm_tiny

Resumes if the workdir holds a checkpoint. Any config field can be overridden, e.g.
``--config.total_steps=100 --config.data.source=mesh:../shared/data/cow_mesh/cow.obj``.
Multi-host: ``--coordinator=HOST:PORT --num_processes=N --process_id=I`` (TPU pods and SLURM
are detected automatically). See README "Scale out".
"""

from absl import flags, logging

from lrm_jax import cli, config_loading


def _define_flags():
  """Command-line flags (defined only when run as a command, so the module imports anywhere)."""
  config_loading.define_config_flag()
  flags.declare_key_flag("config")
  flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics, evals")
  flags.DEFINE_string("coordinator", "", "jax.distributed coordinator HOST:PORT")
  flags.DEFINE_integer("num_processes", 0, "number of processes (with --coordinator)")
  flags.DEFINE_integer("process_id", -1, "this process's id (with --coordinator)")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from lrm_jax import parallel
  distributed = parallel.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes,
                                                      FLAGS.process_id)
  from lrm_jax.train import trainer
  try:
    summary = trainer.train_and_evaluate(config_loading.config_from_command_line(),
                                         FLAGS.workdir)
  except trainer.NonFiniteLossError as e:
    raise SystemExit(f"{cli.program_name()}: error: {e}") from e
  if distributed:
    # Leave together, before interpreter shutdown tears down orbax's and grain's threads:
    # the coordination service's shutdown barrier waits for every process.
    parallel.shutdown_distributed()
  ev = summary.get("eval")
  if ev:
    print(f"done: {summary['steps']} steps in {summary['wall_s']:.0f} s; held-out PSNR "
          f"{ev['psnr']:.2f} dB (baseline {ev['baseline_psnr']:.2f} dB), SSIM {ev['ssim']:.3f}; "
          f"summary in {FLAGS.workdir}/summary.json")


if __name__ == "__main__":
  _define_flags()
  cli.run(main, flags_parser=config_loading.flags_parser)

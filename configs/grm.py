"""GRM (Xu, Shi et al. ECCV 2024): 4 posed views -> pixel-aligned 3D Gaussians.

Usage: ``--config=configs/grm.py:tiny`` or ``--config=configs/grm.py:variant=paper``.
Variants: ``tiny`` (trains on a 2-core CPU), ``base`` (12 layers, width 768, 256^2),
``paper`` (512^2 inputs, 24 layers, width 1024).
"""

import ml_collections

from configs import common
from lrm_jax.models import grm as grm_model

VARIANTS = tuple(grm_model.VARIANTS)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny", runlocal=False)
  common.check_choice("variant", arg.variant, VARIANTS)
  config = common.base_config()
  config.family = "grm"
  config.model_name = "grm"
  config.variant = arg.variant

  config.model = grm_model.model_config(arg.variant)

  d = config.data
  d.num_input_views = 4
  d.num_target_views = 4
  if arg.variant == "micro":  # smaller than tiny: end-to-end tests
    d.render_size = d.input_size = d.target_size = 16
    d.num_input_views = d.num_target_views = 2
    d.views_per_scene = 6
    d.num_eval_scenes = 2
    d.batch_size = 2
    config.total_steps = 3
    config.progress_bar = False
  elif arg.variant == "tiny":
    # Budget: 15 minutes on a 2-core CPU, compile and evals included.
    d.render_size = 64
    d.input_size = 64
    d.target_size = 64
    d.batch_size = 2
    config.total_steps = 600
    config.eval_every = 100
    config.checkpoint_every = 100
    config.optimizer.warmup_steps = 50
    config.optimizer.lr = 1e-3
    # Exact depth of the synthetic targets: a scale-invariant depth term speeds up geometry.
    config.loss.depth = 0.2
  elif arg.variant == "base":
    d.render_size = 256
    d.input_size = 256
    d.target_size = 256
    d.batch_size = 8
  else:  # paper
    d.render_size = 512
    d.input_size = 512
    d.target_size = 512
    d.batch_size = 256
  if arg.runlocal:
    d.render_size = d.input_size = d.target_size = 64
    d.batch_size = 2
    config.total_steps = 20
  return config

"""The toy family's config: ``--config=tests/toy/config.py`` (see tests/toy/mean_color.py)."""

import ml_collections

from lrm_jax import config_defaults as common
from tests.toy import mean_color


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny")
  config = common.base_config()
  config.family = "mean_color"
  config.model_name = "tests.toy.mean_color"  # a family outside lrm_jax/models
  config.variant = arg.variant
  config.model = mean_color.model_config(arg.variant)
  config.loss.grey = 1e-3
  config.loss.mask = 0.0  # alpha is 1 everywhere: a mask loss would be a constant
  d = config.data
  d.render_size = d.input_size = d.target_size = 16
  d.num_input_views = d.num_target_views = 2
  d.views_per_scene = 4
  d.num_eval_scenes = 2
  d.batch_size = 2
  config.total_steps = 30
  config.optimizer.lr = 0.05
  config.optimizer.warmup_steps = 1
  config.eval_every = config.checkpoint_every = 30
  config.log_every = 1
  config.progress_bar = False
  return config

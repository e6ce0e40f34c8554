"""LRM (Hong et al. ICLR 2024) / OpenLRM: one image -> triplane NeRF.

Usage: ``--config=configs/lrm.py:tiny`` or ``--config=configs/lrm.py:variant=paper``.
Variants: ``tiny`` (CPU), ``small``/``base``/``large`` (OpenLRM's table), ``paper``.
"""

import ml_collections

from configs import common

VARIANTS = ("tiny", "small", "base", "large", "paper")


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny", runlocal=False)
  common.check_choice("variant", arg.variant, VARIANTS)
  config = common.base_config()
  config.family = "lrm"
  config.model_name = "lrm"
  config.variant = arg.variant

  config.model = ml_collections.ConfigDict()
  config.model.variant = arg.variant

  d = config.data
  d.num_input_views = 1
  d.num_target_views = 4
  if arg.variant == "tiny":
    d.render_size = 64
    d.input_size = 64
    d.target_size = 64
    d.target_crop = 32
    d.batch_size = 2
  else:
    d.render_size = 512
    d.input_size = 512 if arg.variant == "paper" else 448
    d.target_size = 192
    d.target_crop = 64
    d.batch_size = 256 if arg.variant == "paper" else 16
  if arg.runlocal:
    d.render_size = d.input_size = d.target_size = 64
    d.target_crop = 32
    d.batch_size = 2
    config.total_steps = 20
  return config

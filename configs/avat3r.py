"""Avat3r (Kirschstein et al. ICCV 2025): 4 posed images of a head -> an animatable avatar
of pixel-aligned 3D Gaussians driven by an expression code.

Usage: ``--config=configs/avat3r.py:tiny`` or ``--config=configs/avat3r.py:variant=paper``.
Variants: ``micro`` (tests), ``tiny`` (trains on a 2-core CPU on the synthetic heads),
``paper`` (512^2 inputs, 8 self- + 8 cross-attention layers, 4 expression tokens).
Data: ``data.source = "heads"`` (the embedded synthetic heads, data/heads.py) or
``head_folder:DIR`` (captures on disk, data/head_folder.py; README "Avat3r").
"""

import ml_collections

from lrm_jax import config_defaults as common
from lrm_jax.models import avat3r as avat3r_model

VARIANTS = tuple(avat3r_model.VARIANTS)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny", runlocal=False)
  common.check_choice("variant", arg.variant, VARIANTS)
  config = common.base_config()
  config.family = "avat3r"
  config.model_name = "avat3r"
  config.variant = arg.variant
  config.model = avat3r_model.model_config(arg.variant)

  # Avat3r's loss: 0.8 L1 + 0.2 (1 - SSIM) (+ 0.01 LPIPS, when config.lpips_weights is set).
  config.loss.mse = 0.0
  config.loss.l1 = 0.8
  config.loss.ssim = 0.2
  config.loss.lpips = 0.01
  # Ours, not the paper's: landmark motion (models/avat3r.landmark_loss) where the data has
  # landmarks; 0 = off.
  config.loss.landmarks = 0.0

  d = config.data
  d.source = "heads"
  # The first num_input_views views of an example are its inputs (each at its own
  # expression), the others targets at the target expression: inputs stay fixed.
  d.orbit_inputs = True
  d.num_input_views = 4
  d.num_target_views = 4
  d.views_per_scene = 8
  d.num_identities = 0  # heads source: identities of the train split (0: one per example)
  if arg.variant == "micro":
    d.render_size = d.input_size = d.target_size = 16
    d.num_target_views = 2
    d.views_per_scene = 6
    d.num_eval_scenes = 2
    d.batch_size = 2
    config.total_steps = 3
    config.progress_bar = False
    config.model.host_sorts = False
  elif arg.variant == "tiny":
    # Budget: 15 minutes on a 2-core CPU, compile and evals included (README "Avat3r").
    d.render_size = d.input_size = d.target_size = 32
    d.batch_size = 4
    d.num_eval_scenes = 16
    config.total_steps = 900
    config.eval_every = 300
    config.checkpoint_every = 300
    config.optimizer.warmup_steps = 50
    config.optimizer.lr = 2e-3
  else:  # paper
    d.render_size = d.input_size = d.target_size = 512
    d.batch_size = 256
    # As the paper GRM: FSDP over all chips, layers rematerialised, the splatting renderer
    # one target view at a time.
    config.mesh.shape = (1, -1, 1)
    config.model.remat_policy = "full"
    config.model.intersections_per_gaussian = 6
    config.model.render_views_at_once = 1
    config.model.render_remat = True
    config.optimizer.lr = 5e-5  # Adam 5e-5 (REFERENCES.md)
  if arg.runlocal:
    d.render_size = d.input_size = d.target_size = 32
    d.batch_size = 2
    config.total_steps = 20
  return config

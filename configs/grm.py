"""GRM (Xu, Shi et al. ECCV 2024): 4 posed views -> pixel-aligned 3D Gaussians.

Usage: ``--config=configs/grm.py:tiny`` or ``--config=configs/grm.py:variant=paper``.
Variants: ``tiny`` (trains on a 2-core CPU), ``base`` (12 layers, width 768, 256^2),
``paper`` (512^2 inputs, 24 layers, width 1024).
"""

import ml_collections

from lrm_jax import config_defaults as common
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
  # input_depth: each pixel's Gaussian vs the input view's depth (models/pixel_gaussians.regularizers).
  config.loss.input_depth = 0.0

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
    # Binning and gradient sums in XLA, not host callbacks: the test processes that run it
    # (resume, SIGTERM, kill -9) then share the persistent compilation cache.
    config.model.host_sorts = False
  elif arg.variant == "tiny":
    # Budget: 15 minutes on a 2-core CPU, compile and evals included.
    d.render_size = 64
    d.input_size = 64
    d.target_size = 64
    d.batch_size = 2
    config.total_steps = 1100  # the time on 2-core CPUs: README "Quickstart"
    config.eval_every = 100
    config.checkpoint_every = 100
    config.optimizer.warmup_steps = 50
    config.optimizer.lr = 2e-3
    # GRM's setting: 4 inputs on a ring (20 degrees elevation, 90 degrees apart), novel
    # targets anywhere; anti-aliased renders (2x2 rays per pixel), as real images are.
    d.orbit_inputs = True
    d.supersample = 2
    config.model.window = 4  # 4x4-pixel windows (x4 views): 4x cheaper upsampler attention
    # A light pull of each pixel's Gaussian to the input view's depth (known here). More
    # (1.0) learned depth better but rendered worse at 100 steps: 19.6 vs 20.5 dB.
    config.loss.input_depth = 0.1
  elif arg.variant == "base":
    d.render_size = 256
    d.input_size = 256
    d.target_size = 256
    d.batch_size = 8
    # CPU-sized: the 12 layers unrolled (XLA:CPU runs them faster than scanned, and the
    # compile time stays short), and 10 intersections per Gaussian (all Gaussians at
    # max_scale need 9.4 in 256^2 views at 8-pixel tiles, freshly initialised ones 4.9;
    # the default 16 sorts 60% more keys).
    config.model.scan = False
    config.model.intersections_per_gaussian = 10
    # 1,024 tiles per view: composite 128 at a time (the fastest of 32 / 64 / 128 / 256 for
    # the render's forward + backward: bench/RESULTS.md).
    config.model.block_tiles = 128
  else:  # paper
    d.render_size = 512
    d.input_size = 512
    d.target_size = 512
    d.batch_size = 256
    # Fits a 16 GiB v5e chip at global batch 256 on v5e:16x16 (bench/RESULTS.md, AOT):
    # parameters and AdamW state sharded over all chips (FSDP, one scene per chip), layers
    # rematerialised, and the splatting renderer kept to one target view at a time.
    config.mesh.shape = (1, -1, 1)
    config.model.remat_policy = "full"
    # All Gaussians at max_scale need 4.5 intersections each in 512^2 views of synthetic
    # scenes (2.7 at the initial scale); overflow beyond 6 is counted, never silent.
    config.model.intersections_per_gaussian = 6
    config.model.render_views_at_once = 1
    config.model.render_remat = True
  if arg.runlocal:
    d.render_size = d.input_size = d.target_size = 64
    d.batch_size = 2
    config.total_steps = 20
  return config

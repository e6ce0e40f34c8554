"""pixelNeRF (Yu et al. CVPR 2021): 1..N posed images -> an image-conditioned NeRF.

Usage: ``--config=configs/pixelnerf.py:tiny`` or ``--config=configs/pixelnerf.py:variant=paper``.
Variants: ``tiny`` (trains on a 2-core CPU), ``paper`` (ResNet-34 encoder, 512-wide
ResnetFC, 64 + 16 + 16 samples per ray, 128^2 SRN images, 4 objects per step).

Evaluation with another number of input views than training:
``--config.data.eval_input_views=2``. Pretrained encoders load from a local file:
``--config.model.encoder_weights=resnet34.pth`` (lrm_jax/convert/resnet.py).
"""

import ml_collections

from lrm_jax import config_defaults as common
from lrm_jax.models import pixelnerf as pixelnerf_model

VARIANTS = tuple(pixelnerf_model.VARIANTS)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny", runlocal=False)
  common.check_choice("variant", arg.variant, VARIANTS)
  config = common.base_config()
  config.family = "pixelnerf"
  config.model_name = "pixelnerf"
  config.variant = arg.variant
  config.model = pixelnerf_model.model_config(arg.variant)

  # pixelNeRF: MSE of the coarse and the fine pass, nothing else.
  config.loss.mse = 1.0
  config.loss.coarse_mse = 1.0
  config.loss.lpips = 0.0
  config.loss.mask = 0.0

  # pixelNeRF: Adam 1e-4, no decay, no clipping to speak of.
  o = config.optimizer
  o.b1, o.b2, o.weight_decay, o.clip_norm, o.min_lr_ratio = 0.9, 0.999, 0.0, 1e6, 1.0

  d = config.data
  d.num_input_views = 2  # trained with 1 or 2 (model.min_train_views = 1), as on SRN
  d.eval_input_views = 1  # scored from one view; --config.data.eval_input_views=2 for two
  if arg.variant == "tiny":
    # 4 scenes x 2 target views x 12^2 rays (crops of 32^2 renders) x (16 coarse + 32 fine
    # evaluations) x 2 input views (one of them weighted 0 half the time) per step: about
    # 2.2 s of one core per step on an AVX2-only AMD EPYC. Scored on whole held-out views
    # (before 718aaef the score was taken on 12^2 crops), the 400-step checkpoint gives
    # 16.24 dB from 1 view against a baseline of 15.62: the issue's +3 dB is not met.
    # data.target_crop_in_mask=True gave 16.26 at step 200 (no gain yet).
    d.render_size = 64
    d.input_size = 64
    d.target_size = 32
    d.target_crop = 12
    d.views_per_scene = 4
    d.num_target_views = 2
    d.batch_size = 4
    config.total_steps = 400
    o.lr = 1e-3
    o.warmup_steps = 50
    o.min_lr_ratio = 0.1
    o.clip_norm = 1.0
    config.log_every = 25
    config.eval_every = 200
    config.checkpoint_every = 300
  else:
    # SRN: 128^2 images; 4 objects x 2 targets x 8^2 rays = 512 rays (the paper: 4 x 128).
    # AOT (python -m lrm_jax.aot --topology=v5e:2x2 --nolpips, libtpu, on a CPU): 15.0M
    # parameters, data parallel over 4 chips, peak 1.70 GiB per chip of 16 (temp 1.44 GiB),
    # 2.4 TFLOP per step; the TPU compile took 468 s on one shared CPU core.
    d.render_size = 128
    d.input_size = 128
    d.target_size = 128
    d.target_crop = 8
    # The paper draws rays inside the object's box for the first 100k steps: resume with
    # --config.data.target_crop_in_mask=false after that.
    d.target_crop_in_mask = True
    d.views_per_scene = 50
    d.num_target_views = 2
    d.batch_size = 4
    config.total_steps = 400_000
    o.lr = 1e-4
    o.warmup_steps = 0
  if arg.runlocal:
    d.batch_size = 2
    config.total_steps = 20
  return config

"""LRM (Hong et al. ICLR 2024) / OpenLRM: one image -> triplane NeRF.

Usage: ``--config=configs/lrm.py:tiny`` or ``--config=configs/lrm.py:variant=paper``.
Variants: ``tiny`` (trains on a 2-core CPU in about 15 minutes), ``small``/``base``/``large``
(OpenLRM v1.1's table: DINOv2-with-registers encoders at 448^2), ``paper`` (DINO ViT-B/16 at
512^2, 16 x 1024 decoder, 80-channel 64^2 planes, 128 samples per ray).

Pretrained encoders load from a local file:
``--config.model.encoder_weights=PATH.safetensors`` (see ``lrm_jax/convert/dino.py``).
"""

import ml_collections

from lrm_jax import config_defaults as common
from lrm_jax.models import lrm as lrm_model

VARIANTS = tuple(lrm_model.VARIANTS)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="tiny", runlocal=False)
  common.check_choice("variant", arg.variant, VARIANTS)
  config = common.base_config()
  config.family = "lrm"
  config.model_name = "lrm"
  config.variant = arg.variant

  config.model = lrm_model.model_config(arg.variant)

  # OpenLRM: MSE + LPIPS x1 (when config.lpips_weights is given) + TV on planes 5e-4.
  config.loss.mse = 1.0
  config.loss.lpips = 1.0
  config.loss.tv = 5e-4
  config.loss.mask = 0.0 if arg.variant in ("small", "base", "large", "paper") else 0.5

  d = config.data
  d.num_input_views = 1
  # Single-image inputs (lrm_jax/data/single_image.py): the object's longest side fills this
  # fraction of the frame, as in the synthetic training views (median 0.47).
  d.frame_fill = 0.47
  if arg.variant == "tiny":
    # Sized for ~15 minutes on a shared 2-core CPU, where ray marching dominates the step:
    # 4 scenes x 2 target views x 24^2 rays x (16 + 16) samples. Targets are random 24^2
    # crops of 48^2 renders (as OpenLRM crops 64^2 from 64-192^2): twice the resolution of
    # the object for the same rays as full 24^2 views, which learns colour sooner.
    d.render_size = 64
    d.input_size = 64
    d.target_size = 48
    d.target_crop = 24
    d.views_per_scene = 3  # 1 input + 2 targets: render no views that go unused
    d.num_target_views = 2
    d.batch_size = 4
    config.model.num_coarse = 16
    config.model.num_fine = 16
    config.total_steps = 560
    config.optimizer.lr = 1.5e-3  # 3e-3 learnt slower (eval PSNR 12.9 vs 13.9 at ~300 steps)
    config.optimizer.warmup_steps = 50
    config.optimizer.weight_decay = 0.01
    config.log_every = 25
    config.eval_every = 140
    config.checkpoint_every = 280
  else:
    d.num_target_views = 4
    d.render_size = 512
    d.input_size = 512 if arg.variant == "paper" else 448
    d.target_size = 192
    d.target_crop = 64  # OpenLRM: 64x64 random crops of the target renders
    d.batch_size = 256 if arg.variant == "paper" else 16
    config.total_steps = 100_000
    config.optimizer.warmup_steps = 3000
    config.model.dtype = "bfloat16"
    if arg.variant == "paper":
      # Fits a 16 GiB v5e chip at global batch 256 on v5e:16x16 (bench/RESULTS.md, AOT):
      # parameters and AdamW state sharded over all chips (FSDP, one scene per chip), with
      # the model's full remat and bfloat16 matmuls. Pure data parallelism would keep a
      # whole f32 copy of the 451M parameters, their gradients and AdamW moments (7 GiB)
      # on every chip.
      config.mesh.shape = (1, -1, 1)
  if arg.runlocal:
    patch = config.model.encoder.patch
    d.render_size = d.target_size = 64
    d.input_size = patch * (64 // patch)
    d.target_crop = 32
    d.batch_size = 2
    config.total_steps = 20
  return config

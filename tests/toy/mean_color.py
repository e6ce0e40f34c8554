"""A toy family: each scene is one colour, predicted from the mean of its input views.

It is the smallest model the family contract allows: ``reconstruct`` gives a representation
that is neither Gaussians nor a mesh field (so it is only rendered), ``render`` paints every
pixel in it, and one regularizer pulls it towards grey. Nothing outside this file and
``tests/toy/config.py`` knows it exists.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from lrm_jax import cameras as cam
from lrm_jax.models import family

VARIANTS = {"tiny": dict(hidden=8)}


def model_config(variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(VARIANTS[variant]))
  c.variant = variant
  return c


class Model(family.FamilyModel):
  """``reconstruct(inputs) -> {"color": [B, 3]}``; ``render`` fills every pixel with it."""

  def setup(self):
    self.hidden = nn.Dense(self.config.hidden, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, "mlp")))
    self.out = nn.Dense(3, kernel_init=nn.with_logical_partitioning(
        nn.initializers.zeros, ("mlp", None)))

  def reconstruct(self, inputs: dict, train: bool = False) -> dict:
    del train
    mean = jnp.mean(inputs["images"], axis=(1, 2, 3))  # [B, 3]
    return {"color": jax.nn.sigmoid(self.out(nn.relu(self.hidden(mean))))}  # [B, 3]

  def render(self, representation: dict, cameras: cam.Cameras, background,
             train: bool = False) -> dict:
    del background, train
    b, v = cameras.c2w.shape[:2]
    shape = (b, v, cameras.height, cameras.width)
    rgb = jnp.broadcast_to(representation["color"][:, None, None, None, :], shape + (3,))
    return {"rgb": rgb, "depth": jnp.zeros(shape + (1,)), "alpha": jnp.ones(shape + (1,)),
            "painted_pixels": jnp.full((b, v), float(cameras.height * cameras.width))}


def regularizers(representation, batch, config) -> dict:
  """``{"grey": (config.loss.grey, distance of the colour from grey)}``."""
  del batch
  return {"grey": (config.loss.grey, jnp.mean(jnp.square(representation["color"] - 0.5)))}


FAMILY = family.Family(name="mean_color", model=Model, model_config=model_config,
                       variants=tuple(VARIANTS), regularizers=regularizers)

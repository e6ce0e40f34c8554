"""The train step every family shares: render, losses, gradients, a guarded AdamW update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lrm_jax.data import pipeline
from lrm_jax.models import family as family_lib
from lrm_jax.train import losses
from lrm_jax.train import metrics as metrics_lib
from lrm_jax.train import state as state_lib

# The images a renderer returns; any other key of its dict is an extra (a diagnostic).
RENDERED_IMAGES = ("rgb", "depth", "alpha")


def make_train_step(model, fam: family_lib.Family, config, tx, perceptual):
  """The pure train step ``(state, batch) -> (state, metrics)`` (to be jitted).

  Loss: the image losses of ``model``'s render of the target cameras plus the family's
  regularizers; a non-finite step leaves the state untouched. Renderer extras (any key of
  the rendered dict beyond ``rgb``, ``depth``, ``alpha``) are summed into the metrics.
  """
  bg = jnp.asarray(config.data.background, jnp.float32)
  root = state_lib.root_key(config)

  def train_step(state, batch):
    key = jax.random.fold_in(root, state.step)
    targets = batch["targets"]
    cams = pipeline.batch_cameras(targets)

    def loss_fn(params):
      rendered, rep = model.apply({"params": params}, batch["inputs"], cams, bg, train=True,
                                  rngs={"sample": key})
      terms = losses.image_losses(rendered, targets, config.loss, perceptual)
      total = terms.pop("total")
      for name, (weight, value) in fam.regularizers(rep, batch, config).items():
        terms[name] = value
        total = total + weight * value
      if config.inject_nan_at_step >= 0:
        total = total + jnp.where(state.step == config.inject_nan_at_step, jnp.nan, 0.0)
      return total, (terms, rendered)

    (loss, (terms, rendered)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(grads, state):
      updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                     global_norm=grad_norm)
      return state_lib.TrainState(step=state.step + 1, opt_state=opt_state,
                                  params=optax.apply_updates(state.params, updates))

    # A non-finite step leaves the state untouched, so nothing bad can reach a checkpoint.
    # (A cond, not a select of every leaf: that select re-read and re-wrote parameters and
    # both AdamW moments, 0.3 s of the base GRM's step on a 2-core CPU.)
    new = jax.lax.cond(finite, update, lambda grads, state: state, grads, state)
    out = dict(terms, loss=loss, grad_norm=grad_norm, finite=finite,
               psnr=jnp.mean(metrics_lib.psnr(rendered["rgb"], targets["images"])),
               lr=state_lib.make_schedule(config)(state.step))
    for name in sorted(set(rendered) - set(RENDERED_IMAGES)):
      out[name] = jnp.sum(rendered[name])
    return new, out

  return train_step

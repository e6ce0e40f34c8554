"""Per-scene fitting: optimise one representation to one scene's posed views.

  python -m lrm_jax.fit.gaussians --input=mesh:../shared/data/cow_mesh/cow.obj --out=DIR
  python -m lrm_jax.fit.triplane --input=mesh:../shared/data/cow_mesh/cow.obj --out=DIR

:mod:`lrm_jax.fit.common` holds what both commands share (flags, loading the views, the
held-out split, the time/step-budgeted loop, scoring the held-out views, the outputs and
``summary.json``); :mod:`lrm_jax.fit.gaussians` (3D Gaussians) and
:mod:`lrm_jax.fit.triplane` (a triplane NeRF) hold only what is specific to each.
"""

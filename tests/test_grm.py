"""GRM model pieces: shapes, per-pixel priors, the pixel-aligned depth loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm_jax import cameras as cam
from lrm_jax.config_loading import load_config
from lrm_jax.data import pipeline
from lrm_jax.models import grm
from lrm_jax.models import pixel_gaussians
from lrm_jax.representations import gaussians as gs
from lrm_jax.render import tiled


@pytest.fixture(scope="module")
def micro():
  config = load_config("configs/grm.py:micro", ["data.num_workers=0"])
  batch = next(pipeline.make_iterator(config))
  model = grm.Model(config.model)
  params = model.init(jax.random.key(0), batch["inputs"], method=model.reconstruct)["params"]
  return config, batch, model, params


def test_one_gaussian_per_input_pixel_and_top_k_for_splatting(micro):
  config, batch, model, params = micro
  images = batch["inputs"]["images"]  # [B, V, H, W, 3]
  b, v, h, w, _ = images.shape
  g = model.apply({"params": params}, batch["inputs"], method=model.reconstruct)
  assert g.means.shape == (b, v * h * w, 3) and g.sh.shape == (b, v * h * w, 1, 3)
  kept = model.apply({"params": params}, g, method=model.splat_subset)
  assert kept.num == round(config.model.keep_fraction * v * h * w)


def test_render_tile_settings_change_speed_not_pictures(micro, monkeypatch):
  """model.tile_size / block_tiles / chunk_size (default 8 / 16 / 8) reach the tiled
  rasteriser and render what 16 / 4 / 32 renders (a Gaussian's footprint is cut at tile
  edges 3 sigma out, so only below-1/255 contributions can differ)."""
  config, batch, _, params = micro
  cams = pipeline.batch_cameras(batch["targets"])
  bg = jnp.asarray(config.data.background, jnp.float32)
  seen = []
  rasterize_tiles = tiled.rasterize_tiles

  def recording(*args, **kw):
    seen.append((kw["tile_size"], kw["block_tiles"], kw["chunk_size"]))
    return rasterize_tiles(*args, **kw)

  monkeypatch.setattr(tiled, "rasterize_tiles", recording)
  images = {}
  for tile, block, chunk in ((16, 4, 32), (8, 16, 8)):
    c = config.model.copy_and_resolve_references()
    c.backend, c.tile_size, c.block_tiles, c.chunk_size = "tiled", tile, block, chunk
    model = grm.Model(c)
    g = model.apply({"params": params}, batch["inputs"], method=model.reconstruct)
    images[tile] = model.apply({"params": params}, g, cams, bg, method=model.render)["rgb"]
    assert seen[-1] == (tile, block, chunk)  # the settings did reach the renderer
  assert images[8].shape == batch["targets"]["images"].shape
  np.testing.assert_allclose(images[8], images[16], atol=2e-3)


def test_fresh_model_starts_from_the_pixel_priors(micro):
  """With zeroed heads, each Gaussian has its pixel's colour and sits where its ray passes
  closest to the world origin."""
  config, batch, model, params = micro
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if "head" in jax.tree_util.keystr(path) else x,
      params)
  g = model.apply({"params": params}, batch["inputs"], method=model.reconstruct)
  inputs = batch["inputs"]
  b, v, h, w, _ = inputs["images"].shape
  colours = np.asarray(g.rgb)
  expected = np.clip(inputs["images"].reshape(b, -1, 3), 0.01, 0.99)
  np.testing.assert_allclose(colours, expected, atol=1e-5)
  # Independent reference: the closest point of each pixel ray to the origin.
  origins, dirs = cam.get_rays(inputs["c2w"], inputs["intrinsics"], h, w)
  o, d = np.asarray(origins).reshape(b, -1, 3), np.asarray(dirs).reshape(b, -1, 3)
  t0 = -np.sum(o * d, -1, keepdims=True) / np.sum(d * d, -1, keepdims=True)
  t0 = np.clip(t0, config.model.near + 0.02 * (config.model.far - config.model.near),
               config.model.far - 0.02 * (config.model.far - config.model.near))
  np.testing.assert_allclose(np.asarray(g.means), o + t0 * d, atol=1e-4)


def test_pixel_depth_loss_matches_a_numpy_reference():
  rng = np.random.default_rng(0)
  b, v, h, w = 2, 3, 4, 5
  c2w = np.asarray(cam.look_at(rng.normal(size=(b, v, 3)) * 2.0 + np.array([0, 0, 3.0]),
                               np.zeros(3), np.array([0, 0, 1.0])), np.float32)
  means = rng.normal(size=(b, v * h * w, 3)).astype(np.float32)
  depths = rng.uniform(0.5, 4.0, size=(b, v, h, w, 1)).astype(np.float32)
  depths[0, 0, 0, :2] = 0.0  # unknown depth: ignored
  masks = (rng.uniform(size=(b, v, h, w, 1)) > 0.3).astype(np.float32)
  g = gs.Gaussians.from_rgb(jnp.asarray(means), jnp.full((b, v * h * w, 3), 0.01),
                            jnp.tile(jnp.asarray([1.0, 0, 0, 0]), (b, v * h * w, 1)),
                            jnp.full((b, v * h * w, 1), 0.5), jnp.full((b, v * h * w, 3), 0.5))
  inputs = {"c2w": jnp.asarray(c2w), "depths": jnp.asarray(depths), "masks": jnp.asarray(masks)}
  got = float(pixel_gaussians.pixel_depth_loss(g, inputs))
  # Reference: world -> camera with the inverse c2w, camera z, masked mean |z - depth|.
  errs, n = 0.0, 0
  for bi in range(b):
    for vi in range(v):
      w2c = np.linalg.inv(c2w[bi, vi].astype(np.float64))
      for p in range(h * w):
        y, x = divmod(p, w)
        target = depths[bi, vi, y, x, 0]
        if target > 0 and masks[bi, vi, y, x, 0] > 0.5:
          pt = means[bi, vi * h * w + p].astype(np.float64)
          z = (w2c[:3, :3] @ pt + w2c[:3, 3])[2]
          errs += abs(z - target)
          n += 1
  np.testing.assert_allclose(got, errs / n, rtol=1e-5)


def test_input_depth_regularizer_is_off_by_default_and_on_by_weight(micro):
  config, batch, model, params = micro
  g = model.apply({"params": params}, batch["inputs"], method=model.reconstruct)
  assert pixel_gaussians.regularizers(g, batch, config) == {}
  config = load_config("configs/grm.py:micro", ["loss.input_depth=0.5"])
  (weight, value), = pixel_gaussians.regularizers(g, batch, config).values()
  assert weight == 0.5 and np.isfinite(float(value)) and float(value) > 0


def test_visual_hull_depth_finds_the_front_of_a_sphere():
  """Four ring views of a unit-radius sphere: every input ray that hits the sphere enters
  the hull of the silhouettes at or before the sphere (the hull contains it, up to the
  pixel quantisation of the silhouettes), and near the
  image centre, where the other views' silhouettes bound the sphere, close to it."""
  from lrm_jax.data import synthetic
  h = w = 32
  c2w, k = synthetic.sample_cameras(np.random.default_rng(0), 4, h, (3.0, 3.0), (50.0, 50.0),
                                    orbit_views=4, orbit_elevation_deg=0.0)
  origins, dirs = cam.get_rays(c2w, k, h, w)  # [V, H, W, 3]
  # Exact ray-sphere entry (radius 0.5 at the origin) and silhouettes.
  b = np.sum(origins * dirs, -1)
  disc = b * b - (np.sum(origins * origins, -1) - 0.25)
  hit = disc > 0
  t_true = np.where(hit, -b - np.sqrt(np.maximum(disc, 0)), 0.0)
  inputs = {"c2w": jnp.asarray(c2w)[None], "intrinsics": jnp.asarray(k)[None],
            "masks": jnp.asarray(hit[None, ..., None].astype(np.float32))}
  t0 = -np.sum(origins * dirs, -1, keepdims=True)
  t = np.asarray(grm.visual_hull_depth(jnp.asarray(origins)[None], jnp.asarray(dirs)[None],
                                       inputs, jnp.asarray(t0)[None], half_range=1.0,
                                       samples=101))[0, ..., 0]
  step = 2.0 / 100
  # Pixel silhouettes shrink the hull by up to a pixel's footprint (~0.09 here) at its rim.
  assert np.mean(t[hit] <= t_true[hit] + step) > 0.9
  assert np.all(t[hit] <= t_true[hit] + step + 0.1)
  centre = hit & (np.hypot(*np.meshgrid(np.arange(w) - w / 2 + 0.5,
                                        np.arange(h) - h / 2 + 0.5)) < 4)[None]
  np.testing.assert_allclose(t[centre], t_true[centre], atol=0.08)
  np.testing.assert_allclose(t[~hit], t0[~hit][..., 0])  # misses keep the centre prior

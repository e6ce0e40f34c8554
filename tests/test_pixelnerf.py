"""pixelNeRF: feature sampling at pixel centres, positional encoding, the ResnetFC view
mean, the encoder against a torch ResNet-34 with torchvision's names, the one ray marcher,
a learning step, any number of input views, paper size, mesh export."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrm_jax import cameras as cam
from lrm_jax.config_loading import load_config
from lrm_jax.convert import resnet as resnet_convert
from lrm_jax.data import pipeline
from lrm_jax.io import export
from lrm_jax.models import pixelnerf
from lrm_jax.models import resnet
from lrm_jax.render import raymarch
from lrm_jax.render import triplane as tp
from lrm_jax.train import state as state_lib

SMALL = ["data.input_size=32", "data.target_size=8", "data.target_crop=0",
         "data.num_target_views=1", "data.batch_size=2", "model.num_coarse=8",
         "model.num_fine=4", "model.num_depth=4", "model.hidden=32", "model.stem=8",
         "model.widths=(8,8,16)", "model.mesh_resolution=16"]


@pytest.fixture(scope="module")
def tiny():
  config = load_config("configs/pixelnerf.py:tiny", SMALL)
  model = pixelnerf.FAMILY.build(config)
  params = nn.unbox(jax.jit(lambda k: state_lib.init_variables(pixelnerf.FAMILY, model,
                                                               config, k))(jax.random.key(0)))
  return config, model, params


# ---- feature sampling, encoding, MLP ---------------------------------------------------


def test_a_point_projecting_to_a_pixel_centre_reads_that_pixel():
  maps = jax.random.normal(jax.random.key(0), (1, 6, 8, 5))  # [V, h, w, C]
  c2w = cam.look_at(np.asarray([0.3, -2.0, 0.5], np.float32))[None]  # [1, 4, 4]
  intr = cam.intrinsics_from_fov(np.deg2rad(50.0), 12, 16)[None]  # of a 12 x 16 image
  intr_maps = cam.resize_intrinsics(intr, (12, 16), (6, 8))  # of the 6 x 8 feature maps
  o, d = cam.get_rays(c2w, intr_maps, 6, 8)  # rays through the maps' pixel centres
  points = (o + 1.7 * d).reshape(1, -1, 3)  # [1, 48, 3]
  uv, _ = cam.project_points(jnp.asarray(points), jnp.asarray(c2w), jnp.asarray(intr_maps))
  got = pixelnerf.sample_features(maps, uv)  # [1, 48, C]
  np.testing.assert_allclose(got.reshape(6, 8, 5), maps[0], atol=1e-5)
  # Halfway between two centres: their mean; outside the map: the border pixel.
  uv = jnp.asarray([[[2.0, 0.5], [-3.0, 5.5]]])
  got = pixelnerf.sample_features(maps, uv)[0]
  np.testing.assert_allclose(got[0], 0.5 * (maps[0, 0, 1] + maps[0, 0, 2]), atol=1e-6)
  np.testing.assert_allclose(got[1], maps[0, 5, 0], atol=1e-6)


def test_positional_encoding_layout():
  x = jnp.asarray([[0.1, -0.2, 0.3]])
  e = pixelnerf.positional_encoding(x, 6, 1.5)
  assert e.shape == (1, 39)  # pixelNeRF's 39 (+ 3 view direction = 42)
  np.testing.assert_allclose(e[0, :3], x[0])
  for k in range(6):
    f = 1.5 * 2 ** k
    np.testing.assert_allclose(e[0, 3 + 6 * k:6 + 6 * k], np.sin(f * x[0]), atol=1e-6)
    np.testing.assert_allclose(e[0, 6 + 6 * k:9 + 6 * k], np.cos(f * x[0]), atol=1e-6)


def test_resnetfc_averages_views_after_the_third_block():
  mlp = pixelnerf.ResnetFC(hidden=16, num_blocks=5, num_latent_blocks=3, combine_layer=3)
  x = jax.random.normal(jax.random.key(0), (3, 7, 42))  # [V, N, Din]
  z = jax.random.normal(jax.random.key(1), (3, 7, 48))  # [V, N, 3 H]
  params = mlp.init(jax.random.key(2), x, z, jnp.ones(3))["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
                        nn.unbox(params))  # non-zero fc_1 so every block matters
  f = lambda x, z, w: mlp.apply({"params": params}, x, z, w)
  out = f(x, z, jnp.ones(3))
  assert out.shape == (7, 4)
  # Symmetric in the views; weight 0 drops a view; the same view twice is that view.
  np.testing.assert_allclose(f(x[::-1], z[::-1], jnp.ones(3)), out, atol=1e-5)
  np.testing.assert_allclose(f(x, z, jnp.asarray([1.0, 0.0, 0.0])), f(x[:1], z[:1],
                             jnp.ones(1)), atol=1e-5)
  np.testing.assert_allclose(f(jnp.concatenate([x[:1]] * 2), jnp.concatenate([z[:1]] * 2),
                               jnp.ones(2)), f(x[:1], z[:1], jnp.ones(1)), atol=1e-5)
  # The mean is taken over the per-view activations (not the outputs): not linear in views.
  two = f(x[:2], z[:2], jnp.ones(2))
  assert not np.allclose(two, 0.5 * (f(x[:1], z[:1], jnp.ones(1)) + f(x[1:2], z[1:2],
                                                                      jnp.ones(1))), atol=1e-3)


def test_latent_maps_projected_before_sampling_equal_projecting_samples():
  # What reconstruct relies on: Linear maps commute with bilinear sampling.
  mlp = pixelnerf.ResnetFC(hidden=8)
  feats = jax.random.normal(jax.random.key(0), (2, 5, 6, 12))
  params = mlp.init(jax.random.key(1), feats, method=mlp.project_latent)["params"]
  uv = jax.random.uniform(jax.random.key(2), (2, 9, 2), minval=-1.0, maxval=7.0)
  proj = lambda f: mlp.apply({"params": params}, f, method=mlp.project_latent)
  np.testing.assert_allclose(pixelnerf.sample_features(proj(feats), uv),
                             proj(pixelnerf.sample_features(feats, uv)), atol=1e-5)


# ---- encoder vs torch ------------------------------------------------------------------


def _torch_resnet34():
  """torchvision's resnet34 layout and state-dict names, without torchvision."""
  torch = pytest.importorskip("torch")
  tnn = torch.nn

  class BasicBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(cout)
      self.relu = tnn.ReLU()
      self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(cout)
      self.downsample = None
      if stride != 1 or cin != cout:
        self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                         tnn.BatchNorm2d(cout))

    def forward(self, x):
      y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
      return self.relu(y + (x if self.downsample is None else self.downsample(x)))

  class ResNet34(tnn.Module):
    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
      self.bn1 = tnn.BatchNorm2d(64)
      self.relu = tnn.ReLU()
      self.maxpool = tnn.MaxPool2d(3, 2, 1)
      cin = 64
      for i, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        blocks = []
        for j in range(n):
          blocks.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
          cin = w
        setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
      self.fc = tnn.Linear(512, 1000)

    def pixelnerf_features(self, x):  # the reference's SpatialEncoder, resnet34, 4 layers
      x = self.relu(self.bn1(self.conv1(x)))
      latents = [x]
      x = self.layer1(self.maxpool(x))
      latents.append(x)
      x = self.layer2(x)
      latents.append(x)
      latents.append(self.layer3(x))
      size = latents[0].shape[-2:]
      up = [torch.nn.functional.interpolate(z, size, mode="bilinear", align_corners=True)
            for z in latents]
      return torch.cat(up, 1)

  torch.manual_seed(0)
  net = ResNet34()
  with torch.no_grad():  # non-trivial BatchNorm statistics and affine maps
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return torch, net.eval()


def test_encoder_matches_torch_resnet34(tmp_path):
  torch, net = _torch_resnet34()
  path = os.path.join(tmp_path, "resnet34.pth")
  torch.save(net.state_dict(), path)
  images = np.random.default_rng(0).uniform(size=(2, 40, 48, 3)).astype(np.float32)
  with torch.no_grad():
    want = net.pixelnerf_features(torch.from_numpy(images * 2 - 1).permute(0, 3, 1, 2))
  want = want.permute(0, 2, 3, 1).numpy()  # [2, 20, 24, 512]
  enc = resnet.SpatialEncoder()
  params = resnet_convert.load(path)
  abstract = jax.eval_shape(enc.init, jax.random.key(0), images)["params"]
  from lrm_jax.convert import dino
  dino.check_against(params, nn.unbox(abstract))
  got = jax.jit(enc.apply)({"params": params}, images)
  assert got.shape == want.shape == (2, 20, 24, 512)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_upsample_matches_align_corners_true():
  x = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
  y = resnet.upsample_bilinear(jnp.asarray(x), 5, 7)
  # Corners map to corners; the middle row is the mean of input rows 0-2 at their centre.
  np.testing.assert_allclose(y[0, [0, 0, -1, -1], [0, -1, 0, -1], 0], [0, 3, 8, 11])
  np.testing.assert_allclose(y[0, 2, 0, 0], x[0, 1, 0, 0])


# ---- the model -------------------------------------------------------------------------


def test_one_ray_marcher():
  # pixelNeRF and the triplanes render through render/raymarch.py; none has its own.
  assert tp.march is raymarch.march and tp.composite is raymarch.composite
  assert not hasattr(pixelnerf, "composite") and not hasattr(pixelnerf, "march")
  # A separate fine field sees every merged sample; depth samples stay inside the box.
  seen = []

  def const(sigma, color):
    def field(points, directions):
      seen.append(points.shape[1])
      return (jnp.full(points.shape[:-1], sigma),
              jnp.broadcast_to(jnp.asarray(color), points.shape[:-1] + (3,)))
    return field

  o = jnp.asarray([[0.0, -3.0, 0.1], [0.2, -3.0, 0.0]])
  d = jnp.asarray([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
  config = raymarch.RenderConfig(num_coarse=8, num_fine=4, num_depth=4, return_coarse=True)
  out = raymarch.march(const(0.5, [1.0, 0.0, 0.0]), o, d, config, jax.random.key(0), 0.0,
                       fine_field_fn=const(0.5, [0.0, 1.0, 0.0]))
  assert seen == [8, 16]
  want = 1 - np.exp(-0.5 * 2.0)  # the box is 2 long along the rays
  np.testing.assert_allclose(out["alpha"][:, 0], want, atol=1e-5)
  np.testing.assert_allclose(out["rgb"], [[0.0, want, 0.0]] * 2, atol=1e-5)
  np.testing.assert_allclose(out["rgb_coarse"], [[want, 0.0, 0.0]] * 2, atol=1e-5)
  t = raymarch.depth_samples(jnp.asarray([0.5]), jnp.asarray([0.0]), jnp.asarray([1.0]), 5,
                             0.01)
  np.testing.assert_allclose(jnp.mean(t), 0.5, atol=1e-6)
  assert float(t.max() - t.min()) < 0.05


def test_any_number_of_input_views(tiny):
  config, model, params = tiny
  b = pixelnerf.FAMILY.dummy_batch(config, 1)
  cams = pipeline.batch_cameras(b["targets"])
  v = 3  # more views than the config trains with
  c2w = cam.orbit_cameras(np.linspace(0, 360, v, endpoint=False), np.full(v, 20.0), 2.3)
  inputs = dict(b["inputs"], images=np.full((1, v, 32, 32, 3), 0.5, np.float32),
                c2w=c2w[None].astype(np.float32),
                intrinsics=np.repeat(b["inputs"]["intrinsics"][:, :1], v, 1))
  out, rep = jax.jit(lambda p: model.apply({"params": p}, inputs, cams, jnp.ones(3)))(params)
  assert out["rgb"].shape == (1, 1, 8, 8, 3) and rep["latent"].shape[1] == v
  assert np.all(np.isfinite(out["rgb"]))


def test_train_views_are_one_or_more(tiny):
  config, model, params = tiny
  w = model.apply({"params": params}, 64, 2, True, method=model.view_weights,
                  rngs={"sample": jax.random.key(0)})
  counts = np.asarray(w.sum(1))
  assert set(counts) == {1.0, 2.0} and np.all(w[:, 0] == 1)


def test_a_few_steps_lower_coarse_and_fine_losses(tiny):
  config, model, params = tiny
  fam = pixelnerf.FAMILY
  batch = next(pipeline.make_iterator(config, "train", spec=fam.batch_spec(config)))
  cams = pipeline.batch_cameras(batch["targets"])
  bg = jnp.ones(3)
  tx = optax.adam(1e-3)

  def loss_fn(p, key):
    out, rep = model.apply({"params": p}, batch["inputs"], cams, bg, train=True,
                           rngs={"sample": key})
    regs = pixelnerf.regularizers(rep, batch, config)
    fine = jnp.mean(jnp.square(out["rgb"] - batch["targets"]["images"]))
    return fine + regs["mse_coarse"][0] * regs["mse_coarse"][1], (fine, regs["mse_coarse"][1])

  @jax.jit
  def step(p, opt, key):
    (loss, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(p, key)
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt, parts

  opt = tx.init(params)
  p, history = params, []
  for i in range(25):
    p, opt, parts = step(p, opt, jax.random.key(i))
    history.append([float(x) for x in parts])
  first, last = history[0], np.mean(history[-4:], 0)
  assert last[0] < 0.6 * first[0] and last[1] < 0.6 * first[1], history


def test_paper_variant_sizes():
  config = load_config("configs/pixelnerf.py:paper")
  model = pixelnerf.FAMILY.build(config)
  abstract = jax.eval_shape(lambda k: state_lib.init_variables(pixelnerf.FAMILY, model,
                                                               config, k), jax.random.key(0))
  enc = state_lib.count_params(abstract["encoder"])
  mlp = state_lib.count_params(abstract["coarse"])
  assert 8.1e6 < enc < 8.2e6, enc  # resnet34 up to layer3, BatchNorm as (scale, bias)
  assert 3.3e6 < mlp < 3.5e6, mlp  # 42 -> 512, 3 x (512 -> 512) features, 5 blocks
  assert nn.unbox(abstract["coarse"]["lin_z_0"]["kernel"]).shape == (512, 512)
  assert config.model.num_coarse == 64 and config.model.num_fine == 16
  assert config.model.num_depth == 16


def test_export_writes_a_mesh(tiny, tmp_path):
  config, model, params = tiny
  b = pixelnerf.FAMILY.dummy_batch(config, 1)
  rep = jax.jit(lambda p: model.apply({"params": p}, b["inputs"], method=model.reconstruct))(
      params)
  field = pixelnerf.mesh_field(model, params, rep, config)
  field = type(field)(**{**field.__dict__, "threshold": 0.0})  # any surface of the init
  paths = export.export(rep, str(tmp_path), field)
  assert os.path.getsize(paths["mesh_obj"]) > 0 and os.path.getsize(paths["mesh_glb"]) > 0


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  from lrm_jax.train import trainer  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("pixelnerf_run"))
  config = load_config("configs/pixelnerf.py:tiny", SMALL + [
      "total_steps=1", "eval_every=1000", "checkpoint_every=1", "data.num_eval_scenes=2",
      "progress_bar=False"])
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.parametrize("layout", ["srn", "dvr", "dtu"])
def test_reconstruct_reads_each_pixelnerf_layout(trained_workdir, layout, tmp_path):
  """``reconstruct`` on a scene the project writes in SRN, DVR and DTU form: views,
  turntable and mesh files."""
  from lrm_jax import reconstruct  # pylint: disable=g-import-not-at-top
  from lrm_jax.data import pixelnerf_formats as pf  # pylint: disable=g-import-not-at-top
  v, s = 3, 32
  c2w = np.asarray(cam.orbit_cameras(np.linspace(0, 360, v, endpoint=False), np.full(v, 20.0),
                                     2.3), np.float32)
  k = np.tile(np.asarray([40.0, 40.0, s / 2, s / 2], np.float32), (v, 1))
  images = np.random.default_rng(0).uniform(0.2, 0.8, (v, s, s, 3)).astype(np.float32)
  root = str(tmp_path / layout / "scene")
  if layout == "srn":
    pf.write_srn(root, images, c2w, k[0])
  elif layout == "dvr":
    pf.write_dvr(root, images, c2w, k, np.ones((v, s, s, 1), np.float32))
  else:
    pf.write_dtu(root, images, c2w, k, scale=2.0, offset=(0.3, -0.1, 0.2))
  paths = reconstruct.reconstruct(trained_workdir, root, str(tmp_path / "out"), frames=4)
  for key in ("views", "turntable", "mesh_obj", "mesh_glb"):
    assert os.path.isfile(paths[key]), (key, paths)

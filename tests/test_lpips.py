"""LPIPS-VGG16 in flax against the `lpips` package (randomly initialised VGG trunk).

`lpips` ships its linear-layer weights (v0.1) but not VGG16's, and imports torchvision only
to build VGG16. The test gives it a torchvision stand-in that builds the standard VGG16
`features` stack with random weights, converts both state dicts with our converter, and
compares the distances.
"""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrm_jax.convert import lpips as convert_lpips  # noqa: E402
from lrm_jax.train import lpips as lpips_lib  # noqa: E402

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512,
              512, "M")


def _vgg16(pretrained=False, **unused):
  del pretrained, unused
  layers, c = [], 3
  for item in _VGG16_CFG:
    if item == "M":
      layers.append(torch.nn.MaxPool2d(2, 2))
    else:
      layers += [torch.nn.Conv2d(c, item, 3, padding=1), torch.nn.ReLU(inplace=True)]
      c = item
  return types.SimpleNamespace(features=torch.nn.Sequential(*layers))


@pytest.fixture()
def lpips_pkg(monkeypatch):
  tv = types.ModuleType("torchvision")
  tv.models = types.ModuleType("torchvision.models")
  tv.models.vgg16 = _vgg16
  monkeypatch.setitem(sys.modules, "torchvision", tv)
  monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
  for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
    monkeypatch.delitem(sys.modules, name)
  return pytest.importorskip("lpips")


def test_lpips_matches_reference_package(lpips_pkg):
  torch.manual_seed(0)
  ref = lpips_pkg.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
  vgg_state = {f"features.{k.split('.', 1)[1]}": v.numpy()
               for k, v in ref.net.state_dict().items()}
  lin_state = {k: v.numpy() for k, v in ref.state_dict().items() if k.startswith("lin")}
  params = convert_lpips.params_from_torch_state(vgg_state, lin_state)
  rng = np.random.default_rng(0)
  x = rng.random((3, 48, 64, 3)).astype(np.float32)
  y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y).permute(0, 3, 1, 2),
                   normalize=True).reshape(-1).numpy()
  got = np.asarray(lpips_lib.lpips_fn(params)(x, y))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  assert np.all(got > 0)
  np.testing.assert_allclose(np.asarray(lpips_lib.lpips_fn(params)(x, x)), 0.0, atol=1e-6)


def test_converted_weights_round_trip_through_npz(lpips_pkg, tmp_path):
  ref = lpips_pkg.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
  vgg_state = {f"features.{k.split('.', 1)[1]}": v.numpy()
               for k, v in ref.net.state_dict().items()}
  lin_state = {k: v.numpy() for k, v in ref.state_dict().items() if k.startswith("lin")}
  params = convert_lpips.params_from_torch_state(vgg_state, lin_state)
  path = str(tmp_path / "lpips.npz")
  convert_lpips.save_params(path, params)
  back = lpips_lib.load_params(path)
  np.testing.assert_array_equal(np.asarray(back["vgg"]["conv12"]["kernel"]),
                                params["vgg"]["conv12"]["kernel"])
  np.testing.assert_array_equal(np.asarray(back["lin4"]), params["lin4"])


def test_missing_weights_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="lrm_jax.convert.lpips"):
    lpips_lib.load_params(str(tmp_path / "nope.npz"))


def test_perceptual_loss_is_on_only_with_weights(lpips_pkg, tmp_path):
  import ml_collections
  from lrm_jax.train import losses
  ref = lpips_pkg.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
  vgg_state = {f"features.{k.split('.', 1)[1]}": v.numpy()
               for k, v in ref.net.state_dict().items()}
  lin_state = {k: v.numpy() for k, v in ref.state_dict().items() if k.startswith("lin")}
  path = str(tmp_path / "w.npz")
  convert_lpips.save_params(path, convert_lpips.params_from_torch_state(vgg_state, lin_state))
  assert losses.Perceptual.from_config(ml_collections.ConfigDict({"lpips_weights": ""})) is None
  fn = losses.Perceptual.from_config(ml_collections.ConfigDict({"lpips_weights": path}))
  x = np.full((1, 32, 32, 3), 0.3, np.float32)
  assert float(fn(x, x + 0.2)[0]) > 0

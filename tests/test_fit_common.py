"""fit.common: the held-out split, views, flags and --config. overrides of both commands."""

import os

import numpy as np
import pytest

from lrm_jax.errors import ConfigError
from lrm_jax.fit import common, gaussians, triplane


def test_held_out_views_are_evenly_spread_and_clamped():
  np.testing.assert_array_equal(common.held_out_indices(32, 4), [0, 8, 16, 24])
  np.testing.assert_array_equal(common.held_out_indices(8, 2), [0, 4])
  np.testing.assert_array_equal(common.held_out_indices(10, 3), [0, 3, 6])
  np.testing.assert_array_equal(common.held_out_indices(3, 5), [0, 1])  # one view is kept
  np.testing.assert_array_equal(common.held_out_indices(2, 0), [0])  # one is held out


def test_split_views_partitions_every_per_view_entry_in_order():
  v = 8
  example = {"images": np.arange(v, dtype=np.float32)[:, None, None, None] * np.ones(
      (v, 2, 2, 3), np.float32), "c2w": np.tile(np.eye(4, dtype=np.float32), (v, 1, 1)),
             "intrinsics": np.arange(v * 4, dtype=np.float32).reshape(v, 4),
             "masks": np.ones((v, 2, 2, 1), np.float32), "scene": np.asarray(3)}
  train, held, held_out = common.split_views(example, 2)
  np.testing.assert_array_equal(held_out, [0, 4])
  np.testing.assert_array_equal(held["images"][:, 0, 0, 0], [0, 4])
  np.testing.assert_array_equal(train["images"][:, 0, 0, 0], [1, 2, 3, 5, 6, 7])
  np.testing.assert_array_equal(train["intrinsics"][:, 0], [4, 8, 12, 20, 24, 28])
  assert held["masks"].shape == (2, 2, 2, 1) and train["c2w"].shape == (6, 4, 4)
  assert train["scene"] == 3 and held["scene"] == 3  # not per view: kept whole


def test_background():
  assert common.parse_background("1,0.5,0") == (1.0, 0.5, 0.0)
  assert common.parse_background("0.2") == (0.2, 0.2, 0.2)
  with pytest.raises(ValueError, match="--background"):
    common.parse_background("white")


def test_both_commands_take_the_same_flags_with_their_own_step_defaults():
  argv = ["--input=synthetic", "--out=/tmp/unused", "--num_held_out=3", "--time_limit_s=5"]
  t_options, _ = triplane.parse_command_line(argv)
  g_options, _ = gaussians.parse_command_line(argv)
  for o in (t_options, g_options):
    assert o.num_held_out == 3 and o.time_limit_s == 5.0 and o.progress
  assert t_options.steps == 2000 and g_options.steps == 3000
  assert set(common.COMMON_FLAGS) <= set(g_options.keys()) <= set(t_options.keys())
  t_options, _ = triplane.parse_command_line(argv[:2])  # flags of earlier parses reset
  assert t_options.num_held_out == 4 and t_options.time_limit_s == 600.0


def test_config_overrides_are_typed_and_unknown_keys_name_the_nearest():
  base = ["--input=synthetic", "--out=/tmp/unused"]
  _, config = gaussians.parse_command_line(
      base + ["--config.num_gaussians=500", "--config.lr_sh", "1e-3", "--config.init=box"])
  assert config.num_gaussians == 500 and isinstance(config.num_gaussians, int)
  assert config.lr_sh == 1e-3 and config.init == "box" and config.sh_degree == 1
  _, config = triplane.parse_command_line(base + ["--config.tv_weight=0.01"])
  assert config.tv_weight == 0.01 and config.plane_size == 96
  with pytest.raises(ConfigError, match="'lr_meanz'.*'lr_means'"):
    gaussians.parse_command_line(base + ["--config.lr_meanz=1"])
  with pytest.raises(ConfigError, match="'plane_sise'.*'plane_size'"):
    triplane.parse_command_line(base + ["--config.plane_sise=64"])
  with pytest.raises(ConfigError, match="'num_gaussians'"):
    gaussians.parse_command_line(base + ["--config.num_gaussians=many"])


def test_a_wrong_config_key_stops_the_command_before_anything_is_written(tmp_path, capsys):
  out = tmp_path / "x"
  with pytest.raises(SystemExit) as exit_info:
    triplane.main(["--input=synthetic", f"--out={out}", "--config.tv_wieght=1"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "'tv_wieght'" in err and "'tv_weight'" in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(out)

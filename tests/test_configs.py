"""Config parsing: variants, booleans, unknown args, overrides."""

import pytest

from configs import grm, lrm
from lrm_jax import config_defaults as common
from lrm_jax.config_loading import load_config
from lrm_jax.errors import ConfigError


def test_parse_arg_variants_and_booleans():
  a = common.parse_arg("tiny", variant="base", runlocal=False)
  assert a.variant == "tiny" and a.runlocal is False
  a = common.parse_arg("variant=paper,runlocal=True", variant="base", runlocal=False)
  assert a.variant == "paper" and a.runlocal is True
  a = common.parse_arg("runlocal", variant="base", runlocal=False)
  assert a.runlocal is True and a.variant == "base"
  a = common.parse_arg("runlocal=no,steps=7,lr=0.5", variant="b", runlocal=True, steps=1, lr=1.0)
  assert a.runlocal is False and a.steps == 7 and a.lr == 0.5


def test_parse_arg_errors():
  with pytest.raises(ValueError, match="unknown config arg 'foo'"):
    common.parse_arg("foo=1", variant="tiny")
  with pytest.raises(ValueError, match="boolean"):
    common.parse_arg("runlocal=maybe", runlocal=False)
  with pytest.raises(ValueError, match="unknown variant"):
    grm.get_config("variant=huge")


def test_family_configs_have_shared_defaults():
  for mod in (grm, lrm):
    c = mod.get_config("tiny")
    assert c.data.source == "synthetic"
    assert c.seed == 0 and tuple(c.mesh.axes) == ("data", "fsdp", "tensor")
    assert c.family == mod.__name__.split(".")[-1]
  assert grm.get_config("paper").data.input_size == 512
  assert lrm.get_config(None).data.num_input_views == 1


def test_load_config_with_overrides():
  c = load_config("configs/grm.py:tiny", ["seed=3", "data.source=mesh:x.obj",
                                          "data.background=(0.5, 0.5, 0.5)"])
  assert c.seed == 3 and c.data.source == "mesh:x.obj"
  assert tuple(c.data.background) == (0.5, 0.5, 0.5)
  with pytest.raises(ConfigError, match="data.nope"):
    load_config("configs/grm.py:tiny", ["data.nope=1"])
  with pytest.raises(ConfigError, match="missing.py"):
    load_config("configs/missing.py")


def test_overrides_are_strict_and_name_the_nearest_key():
  c = load_config("configs/grm.py:tiny", ["model.scan=false", "total_steps=1e3",
                                          "mesh.shape=(1,2,1)"])
  assert c.model.scan is False and c.total_steps == 1000 and c.mesh.shape == (1, 2, 1)
  with pytest.raises(ConfigError, match="expected a boolean"):
    load_config("configs/grm.py:tiny", ["model.scan=ture"])
  with pytest.raises(ConfigError, match="expected an integer"):
    load_config("configs/grm.py:tiny", ["total_steps=1.5"])
  with pytest.raises(ConfigError, match="Did you mean 'data.batch_size'"):
    load_config("configs/grm.py:tiny", ["data.batchsize=4"])
  with pytest.raises(ConfigError, match="not key=value"):
    load_config("configs/grm.py:tiny", ["data.batch_size"])


def test_command_line_config_arguments_are_split_out():
  from lrm_jax import config_loading
  rest, spec, overrides = config_loading.split_config_args(
      ["prog", "--config=configs/grm.py:micro", "--workdir=W", "--config.seed=3",
       "--config.data.source", "mesh:x.obj"])
  assert rest == ["prog", "--workdir=W"] and spec == "configs/grm.py:micro"
  assert overrides == ["seed=3", "data.source=mesh:x.obj"]

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

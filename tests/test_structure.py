"""The package's structure stays one-way: layers import only downwards, no import cycles,
the library never imports the top-level ``configs/``, and no shared module names a family.

Imports are read from the source (every ``import``, also inside functions), so a lazy
import cannot hide an arrow that runs up. The layers, bottom to top, are documented in
docs/design.md ("Layers").
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Module prefix -> layer; the longest matching prefix wins. A module may import modules of
# its own package, and of lower layers; of another package only if that package's layer is
# strictly lower.
LAYERS = {
    "lrm_jax.errors": 0,
    "lrm_jax.config_values": 1,
    "lrm_jax.config_defaults": 2, "lrm_jax.config_loading": 2, "lrm_jax.cameras": 2,
    "lrm_jax.parallel": 2, "lrm_jax.cli": 2,
    "lrm_jax.representations": 3, "lrm_jax.render.scans": 3,  # prefix scans (numbers only)
    "lrm_jax.io": 4, "lrm_jax.convert": 4,
    # Shared by the renderer and its kernels: constants and the segmented sums.
    "lrm_jax.render.splat_constants": 4, "lrm_jax.render.segments": 4,
    "kernels": 5,
    "lrm_jax.data": 6, "lrm_jax.render": 6,
    "lrm_jax.models": 7,
    "lrm_jax.train": 8,
    # Commands: they may use everything below.
    "lrm_jax.main": 9, "lrm_jax.evaluate": 9, "lrm_jax.animate": 9, "lrm_jax.reconstruct": 9, "lrm_jax.aot": 9,
    "lrm_jax.reconstruct_scene": 8,  # scene-level reconstruct (data, io); reconstruct calls it
    "lrm_jax.fit": 9, "lrm_jax.render.__main__": 9, "lrm_jax.report": 9,
    # Commands built on other commands: the viewer reconstructs through reconstruct.
    "lrm_jax.view": 10,
}
PACKAGES = ("lrm_jax", "kernels")


def _modules() -> dict[str, str]:
  """``{module name: path}`` of every module of the library and the kernels."""
  out = {}
  for top in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(REPO, top)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(dirpath, f)
          name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
  return out


def _imports(path: str, modules) -> set[str]:
  """Library modules ``path`` imports (``from a import b`` counts as ``a.b`` when that is
  a module, else ``a``)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
               else node.module for a in node.names]
    found.update(n for n in names if n.split(".")[0] in PACKAGES + ("configs",))
  return found


def _layer(module: str) -> tuple[int, str]:
  """``(layer, the prefix that decided it)``."""
  if module in PACKAGES:  # the packages' __init__: docstrings only
    return 0, module
  best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len,
             default=None)
  if best is None:
    raise AssertionError(f"{module} has no layer: add its package to LAYERS (and to "
                         "docs/design.md).")
  return LAYERS[best], best


@pytest.fixture(scope="module")
def graph():
  modules = _modules()
  return {m: _imports(p, modules) for m, p in modules.items()}


def test_every_module_has_a_layer(graph):
  for module in graph:
    _layer(module)


def test_imports_run_down_the_layers(graph):
  wrong = []
  for module, imported in graph.items():
    layer, package = _layer(module)
    for target in imported:
      if target.split(".")[0] == "configs":
        continue  # checked below
      t_layer, t_package = _layer(target)
      same_package = t_package == package or target.startswith(package + ".")
      if t_layer > layer or (t_layer == layer and not same_package):
        wrong.append(f"{module} (layer {layer}) imports {target} (layer {t_layer})")
  assert not wrong, "imports that run up or across the layers:\n" + "\n".join(sorted(wrong))


def test_the_library_never_imports_the_top_level_configs(graph):
  wrong = [f"{m} imports {t}" for m, ts in graph.items() for t in ts
           if t.split(".")[0] == "configs"]
  assert not wrong, wrong


def test_no_import_cycles(graph):
  edges = {m: {t for t in ts if t in graph} for m, ts in graph.items()}
  state, stack, cycles = {}, [], []

  def visit(m):  # depth-first search; a grey node met again closes a cycle
    state[m] = "grey"
    stack.append(m)
    for t in sorted(edges[m]):
      if state.get(t) == "grey":
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = "black"

  for m in sorted(edges):
    if m not in state:
      visit(m)
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_shared_code_never_names_a_family(graph):
  """Only a family's own model file (and its config) import it: shared code reaches every
  family through ``lrm_jax.models.family``."""
  def defines_family(path):
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "FAMILY"
                                                  for t in n.targets)
               for n in ast.parse(open(path).read()).body)
  families = {m for m, p in _modules().items()
              if m.startswith("lrm_jax.models.") and defines_family(p)}
  assert {"lrm_jax.models.grm", "lrm_jax.models.lrm"} <= families
  wrong = [f"{m} imports {t}" for m, ts in graph.items() for t in ts
           if t in families and m != t]
  assert not wrong, wrong


def test_every_module_imports_beside_every_other():
  """Commands define their absl flags only when run (``_define_flags()`` under
  ``__main__``), so importing any two modules in one process (one pytest worker, a notebook)
  never fails on a flag defined twice."""
  import subprocess
  import sys
  code = ("import importlib, pkgutil, lrm_jax\n"
          "for m in pkgutil.walk_packages(lrm_jax.__path__, 'lrm_jax.'):\n"
          "  importlib.import_module(m.name)\n"
          "print('imported', m.name)\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]

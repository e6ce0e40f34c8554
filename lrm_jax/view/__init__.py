"""``python -m lrm_jax.view``: a local web viewer (viser) of Gaussians, meshes and cameras.

``scene.py`` builds what is shown (a :class:`scene.SceneContents`) from a ``.ply`` or from
a trained workdir, with numpy only; ``server.py`` puts it in a viser scene; ``__main__.py``
is the command.
"""

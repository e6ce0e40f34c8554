"""``python -m lrm_jax.report``: one self-contained HTML page per run (or a comparison).

``run.py`` reads what a workdir holds (config, metrics, evaluations, compile memory, eval
grids, videos); ``svg.py`` draws line charts as inline SVG; ``page.py`` writes the page;
``__main__.py`` is the command.
"""

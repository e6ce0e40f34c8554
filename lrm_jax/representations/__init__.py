"""The 3D representations models produce and renderers and exporters consume.

They sit below ``render/`` and ``io/``: both import them, they import neither.
"""

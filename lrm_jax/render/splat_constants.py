"""Constants of the Gaussian-splatting contract (docs/design.md §5), in one place.

The projection and binning (``render/projection.py``, ``render/binning.py``), the jnp
compositors (``render/dense.py``, ``render/tiled.py``) and the Pallas kernel
(``kernels/splat_pallas.py``) all read them from here, so every backend draws the same
Gaussians with the same cut-offs. The values are those of 3DGS / gsplat's "classic" mode.
This module imports nothing, so ``kernels/`` can import it without pulling in the renderer.
"""

TILE_SIZE = 16  # tile side in pixels
NEAR_PLANE = 0.01  # camera z below which a Gaussian is not drawn
LOWPASS = 0.3  # added to the 2D covariance diagonal (pixels^2): every splat covers a pixel
FOV_CLAMP = 1.3  # the projection's Jacobian is evaluated no further out than 1.3x the frustum
ALPHA_MAX = 0.99  # a Gaussian's alpha is clamped here, so no single splat is fully opaque
ALPHA_MIN = 1.0 / 255.0  # alphas below this are skipped (invisible in 8-bit output)
T_MIN = 1e-4  # compositing stops before the Gaussian that would take T below this
DEPTH_EPS = 1e-10  # floor of the accumulated alpha when normalising the expected depth

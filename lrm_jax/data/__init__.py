"""Multi-view data.

Every source yields *examples*: dicts of numpy arrays for all views of one scene,

  images      float32 [V, H, W, 3]  in [0, 1], composited onto the background
  masks       float32 [V, H, W, 1]  1 on the object, 0 on background
  depths      float32 [V, H, W, 1]  z along the camera axis (0 where there is no surface)
  c2w         float32 [V, 4, 4]     OpenCV camera-to-world (lrm_jax.cameras conventions)
  intrinsics  float32 [V, 4]        (fx, fy, cx, cy) in pixels of this H x W
  scene_id    int64   []            index of the scene in its source

Sources without depth give zeros and ``has_depth = 0``.
"""

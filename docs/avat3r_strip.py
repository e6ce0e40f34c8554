"""README's Avat3r frame strip: per held-out head (the synthetic heads' test split), its 4
input views, then ``python -m lrm_jax.animate``'s frames at jaw 0, 0.25, ..., 1 (the other
coefficients 0; a frontal camera, ``--yaw`` degrees from the face, pitch 5) above the true
renders at the same codes.

  python docs/avat3r_strip.py --workdir=W [--heads=2] [--yaw=15]
      [--out=docs/images/avat3r_animate.png]

Also prints the mean brightness of the mouth (a 5x5 pixel box at the midpoint of the true
lips' landmarks in that camera) per frame, predicted and true.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lrm_jax import animate  # noqa: E402
from lrm_jax.data import head_folder, heads  # noqa: E402
from lrm_jax.io import images as image_io  # noqa: E402
from lrm_jax.train import inference  # noqa: E402

JAW_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)


def mouth_brightness(image: np.ndarray, landmarks: np.ndarray) -> float:
  """Mean brightness of the 5x5 box at the midpoint of the upper and lower lip landmarks."""
  lips = landmarks[[heads.LANDMARKS.index("upper_lip"), heads.LANDMARKS.index("lower_lip")]]
  u, v = np.floor(lips[:, :2].mean(0)).astype(int)
  h, w = image.shape[:2]
  box = image[max(v - 2, 0):min(v + 3, h), max(u - 2, 0):min(u + 3, w)]
  return float(box.mean())


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a trained Avat3r run")
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--yaw", type=float, default=15.0)
  p.add_argument("--out", default="docs/images/avat3r_animate.png")
  args = p.parse_args()
  config = inference.load_run_config(args.workdir)
  size = config.data.render_size
  src = heads.SyntheticHeads("test", num_scenes=args.heads, views_per_scene=8,
                             num_input_views=config.data.num_input_views, resolution=size)
  codes = np.zeros((len(JAW_STEPS), heads.EXPRESSION_DIMS), np.float32)
  codes[:, heads.JAW] = JAW_STEPS
  scale = max(1, 96 // size)
  up = lambda im: np.repeat(np.repeat(im, scale, 0), scale, 1)
  blank = np.ones((size * scale, size * scale, 3), np.float32)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    np.save(os.path.join(tmp, "codes.npy"), codes)
    for i in range(args.heads):
      sub = head_folder.write_example(src[i], os.path.join(tmp, "in"), f"head_{i}")
      res = animate.animate(args.workdir, sub, os.path.join(tmp, "codes.npy"),
                            os.path.join(tmp, f"out_{i}"), yaw=args.yaw)
      inputs = animate.load_inputs(sub, config)  # the input views animate used
      c2w, k = res["c2w"][:1], res["intrinsics"][:1]
      truth = []
      for code in codes:
        rgb, _, _, _, lm = heads.render_head(heads.build_head(src.identity(i), code), c2w, k,
                                             size, tuple(config.data.background))
        truth.append((rgb[0], lm[0]))
      pred_m = [mouth_brightness(f, t[1]) for f, t in zip(res["frames"], truth)]
      true_m = [mouth_brightness(t[0], t[1]) for t in truth]
      print(f"head {i}: mouth brightness at jaw {JAW_STEPS}: predicted "
            f"{' '.join(f'{m:.2f}' for m in pred_m)}; true {' '.join(f'{m:.2f}' for m in true_m)}")
      rows.append([up(x) for x in inputs["images"][0]] + [up(f) for f in res["frames"]])
      rows.append([blank] * inputs["images"].shape[1] + [up(t[0]) for t in truth])
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  image_io.save_png(args.out, image_io.grid(rows))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

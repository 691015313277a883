#!/usr/bin/env python3
"""Draws data/scenes256/scene.png: a procedural 256×256 landscape (sky gradient, sun, two hills,
trees, water), the test image of experiments/256-inpaint-box.toml. It needs no dataset and no
licence; any 256×256 RGB PNGs in that folder (faces for a CelebA-HQ model, churches for a church
model) work the same way.  python3 scripts/scene256.py [OUT]"""
import sys

import numpy as np
from PIL import Image, ImageFilter

n = 256
y, x = np.mgrid[0:n, 0:n].astype(np.float64)
img = np.zeros((n, n, 3))
t = y / n
img[:] = (np.array([70, 120, 220]) * (1 - t)[..., None] + np.array([170, 200, 235]) * t[..., None])
sun = (x - 190) ** 2 + (y - 60) ** 2 < 22**2
img[sun] = [255, 220, 120]
for cx, cy, w, h, col in [(70, 140, 120, 30, (60, 140, 50)), (180, 150, 110, 20, (50, 120, 45))]:
    top = cy - h * np.exp(-(((x - cx) / w) ** 2) * 3)
    hill = y > top
    shade = 0.85 + 0.15 * np.sin(x / 6.0)
    img[hill] = (np.array(col)[None, :] * shade[hill][:, None])
for tx, ty in [(40, 135), (60, 135), (225, 135)]:
    trunk = (abs(x - tx) < 3) & (y > ty) & (y < ty + 40)
    img[trunk] = [110, 70, 40]
    crown = (x - tx) ** 2 + (y - ty) ** 2 < 13**2
    img[crown] = [30, 90, 35]
water = y > 200
img[water] = np.array([40, 70, 150])[None, :] * (0.9 + 0.1 * np.sin(y[water] * 1.3))[:, None]
out = sys.argv[1] if len(sys.argv) > 1 else "data/scenes256/scene.png"
Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)).save(out)

"""Input-pipeline throughput at 224 px with full augmentation vs a plain PIL+numpy loader.

  python tools/bench_input.py [--num_images 256] [--seconds 20]

Writes a temporary dataset of 640×480 JPEGs (upscaled `shapes` scenes, COCO-like size), then times
the image and region streams of the tf.data pipeline and a single-process PIL loader doing
decode → RandomResizedCrop → flip → resize → normalise (no RandAugment, no tokenisation) on the
same images. Figures are examples/s per CPU core.
"""

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
  from x2vlm_jax import console

  console.quiet()  # before jax/tensorflow load: expected CPU-machine noise off, warnings and errors kept

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from x2vlm_jax.data import config, pipeline, records, shapes  # noqa: E402
from x2vlm_jax.models.presets import CLIP_MEAN, CLIP_STD  # noqa: E402


def make_dataset(data_dir, n):
  rs = np.random.RandomState(0)

  def gen():
    for _ in range(n):
      img, objs, cap = shapes.render_scene(rs)
      big = Image.fromarray(img).resize((640, 480), Image.BICUBIC)
      arr = np.clip(np.asarray(big, np.float32) + rs.normal(0, 6, (480, 640, 3)), 0, 255).astype(np.uint8)
      buf = io.BytesIO()
      Image.fromarray(arr).save(buf, format="JPEG", quality=90)
      sx, sy = 640 / 128, 480 / 128
      elems = [
        (
          [o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx, o["box"][3] * sy],
          [f"{o['color']} {o['shape']}"],
          [o["size"]],
        )
        for o in objs
      ]
      yield records.image_example(buf.getvalue(), 640, 480, caption=[cap], elems=elems)

  w = records.DatasetWriter(data_dir, "bench", "region")
  w.write_split("train", gen())
  w.finish()
  src = records.open_source(data_dir, "bench", "train")
  return [src[i]["image"] for i in range(len(src))]


def time_stream(cfg, stream, seconds):
  it = pipeline.TrainIterator(cfg, seed=0)
  next(it)  # graph construction + warm-up
  for _ in range(3):
    next(it)
  t0, n = time.time(), 0
  per_batch = cfg.region.num_images if stream == "region" else cfg.image.batch_size
  while time.time() - t0 < seconds:
    next(it)
    n += per_batch
  it.close()
  return n / (time.time() - t0)


def tf_same_work(images, seconds, size=224, batch=32):
  """tf.data doing the PIL loader's work: decode → RandomResizedCrop → flip → normalise (the image
  stream's fused decode-and-crop: only the crop window of the JPEG is decoded)."""
  import tensorflow as tf

  from x2vlm_jax.data import augment

  def fn(i, b):
    seed = tf.stack([tf.cast(i, tf.int32), 7])
    im = augment.decode_random_resized_crop(b, size, seed)  # decodes only the crop window
    return augment.normalize(augment.random_flip(im, seed + 1)[0])

  ds = tf.data.Dataset.from_tensor_slices(tf.constant(images)).repeat().enumerate()
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(2)
  it = iter(ds)
  for _ in range(3):
    next(it)
  t0, n = time.time(), 0
  while time.time() - t0 < seconds:
    next(it)
    n += batch
  return n / (time.time() - t0)


def pil_loader(images, seconds, size=224):
  rs = np.random.RandomState(0)
  mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
  t0, n = time.time(), 0
  while time.time() - t0 < seconds:
    im = Image.open(io.BytesIO(images[n % len(images)])).convert("RGB")
    w, h = im.size
    for _ in range(10):  # RandomResizedCrop(0.2–1, 3/4–4/3)
      area = w * h * rs.uniform(0.2, 1.0)
      ratio = np.exp(rs.uniform(np.log(3 / 4), np.log(4 / 3)))
      cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
      if 0 < cw <= w and 0 < ch <= h:
        break
    else:
      cw, ch = w, h
    x0, y0 = rs.randint(0, w - cw + 1), rs.randint(0, h - ch + 1)
    im = im.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rs.rand() < 0.5:
      im = im.transpose(Image.FLIP_LEFT_RIGHT)
    _ = (np.asarray(im, np.float32) / 255.0 - mean) / std
    n += 1
  return n / (time.time() - t0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--num_images", type=int, default=256)
  p.add_argument("--seconds", type=float, default=20.0)
  a = p.parse_args()
  cores = len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as d:
    images = make_dataset(d, a.num_images)
    c = config.get_data_config()
    c.data_dir, c.image_res, c.patch_size = d, 224, 16
    c.image.datasets = c.region.datasets = [("bench", "train", 1.0)]
    c.image.batch_size, c.region.batch_size, c.region.num_images = 32, 64, 16
    c.video.enabled = False
    c.region.enabled = False
    img = time_stream(c, "image", a.seconds)
    c.image.enabled, c.region.enabled = False, True
    reg = time_stream(c, "region", a.seconds)
    same = tf_same_work(images, a.seconds)
    pil = pil_loader(images, a.seconds)
  print(f"cores: {cores}")
  print(f"tf.data, same work as PIL (decode+RRC+flip+normalise):     {same:.1f} ex/s = {same / cores:.1f} ex/s/core")
  print(f"tf.data image stream  (RRC+flip+RandAugment+tokenise+mask): {img:.1f} ex/s = {img / cores:.1f} ex/s/core")
  print(f"tf.data region stream (box crop+flip+photometric RA+texts): {reg:.1f} images/s = {reg / cores:.1f} /core")
  print(f"PIL+numpy loader, 1 process (RRC+flip+normalise only):      {pil:.1f} ex/s = {pil:.1f} ex/s/core")


if __name__ == "__main__":
  main()

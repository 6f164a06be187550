"""WIT retrieval files (official WIT.py / dataset/wit_dataset.py: JSON lines with the image inside) → the
official retrieval format plus image files, so the `xretrieval` task, its builder and its evaluator read
them (docs/multilingual.md).

  python tools/wit_to_retrieval.py --input wit/train_en.jsonl --output data/wit --split train
  python tools/wit_to_retrieval.py --input wit/test_de.jsonl --output data/wit --split test

A record is {"image_url", "image_content": base64 bytes, "caption_reference_description"}; records with an
empty description are skipped, as officially. Images are written once per URL to OUTPUT/images/<sha1 of
the URL>.<ext> (the URL is the official image identity); train → OUTPUT/<stem>.json rows {image, caption,
image_id = URL}, test → OUTPUT/<stem>.json [{image, caption: [...]}] in first-appearance order (official
img2txt). Then `--image_root OUTPUT`.
"""

import argparse
import base64
import hashlib
import io
import json
import sys


def _image_name(url: str, data: bytes) -> str:
  from PIL import Image

  fmt = (Image.open(io.BytesIO(data)).format or "jpeg").lower()
  return f"images/{hashlib.sha1(url.encode('utf-8')).hexdigest()}.{'jpg' if fmt == 'jpeg' else fmt}"


def convert(path: str, output: str, split: str):
  from x2vlm_jax import fs  # input and output may be gs://

  out_dir = fs.path(output)
  (out_dir / "images").mkdir(parents=True, exist_ok=True)
  names, rows, skipped = {}, [], 0
  with fs.path(path).open("r", encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      rec = json.loads(line)
      caption = rec.get("caption_reference_description")
      if not caption:
        skipped += 1
        continue
      url = rec["image_url"]
      if url not in names:
        data = base64.b64decode(rec["image_content"])
        names[url] = _image_name(url, data)
        (out_dir / names[url]).write_bytes(data)
      rows.append((url, caption))
  if split == "train":
    out = [{"image": names[u], "caption": c, "image_id": u} for u, c in rows]
  else:
    by_url = {}
    for u, c in rows:
      by_url.setdefault(u, []).append(c)
    out = [{"image": names[u], "caption": caps} for u, caps in by_url.items()]
  target = out_dir / (fs.path(path).stem + ".json")
  target.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
  return str(target), len(rows), skipped, len(names)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", required=True, help="a WIT JSON-lines file")
  p.add_argument("--output", required=True)
  p.add_argument("--split", choices=("train", "test"), required=True)
  args = p.parse_args(argv)
  target, n, skipped, images = convert(args.input, args.output, args.split)
  print(f"{target}: {n} captions of {images} images, skipped (empty description): {skipped}")
  return 0


def run():
  """The `x2vlm-wit-to-retrieval` console script (x2vlm_jax/cli/__init__.py: launch)."""
  sys.exit(main())

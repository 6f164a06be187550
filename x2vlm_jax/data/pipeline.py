"""Trainer-facing entry points: `create_train_iterator` and `load_eval_split`.

Resume design (docs/data.md): index-based sampling. Each batch carries the stream position and
per-dataset counters of its last record; `save_state` writes those few integers as JSON and
`restore_state` rebuilds the tf.data graphs starting there. Prefetched batches are simply rebuilt,
so a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

import atexit
import json
import weakref
from typing import Callable, Dict, List, NamedTuple, Optional

import ml_collections
import numpy as np
import tensorflow as tf

from x2vlm_jax import batch as batch_contract
from x2vlm_jax import fs
from x2vlm_jax.data import augment, records
from x2vlm_jax.data.config import stream_enabled
from x2vlm_jax.data.records import ALT_SEP
from x2vlm_jax.data.region_stream import patch_masks, region_stream, transform_boxes
from x2vlm_jax.data.source import StreamSource
from x2vlm_jax.data.streams import STREAM_IDS, decode, image_stream, mtext_stream, video_stream
from x2vlm_jax.data.text import Tokenizer, pre_caption
from x2vlm_jax.data.textproc import TextStage

STATE_FILE = "input_pipeline_state.json"
_LIVE = weakref.WeakSet()


@atexit.register
def _close_all():
  # tf.data threads still running a Python generator at interpreter shutdown can hang or abort the
  # process; dropping the iterators first cancels them cleanly.
  for it in list(_LIVE):
    it.close()


STREAMS = batch_contract.PICTURE_STREAMS  # the English pre-training's streams (the default)
CCLM_STREAMS = ("image", "region", "mtext")  # the multilingual CCLM pre-training (docs/reference.md §3.7)


def _per_host(value: int, process_count: int, what: str) -> int:
  if value % process_count:
    raise ValueError(f"{what}={value} is not divisible by process_count={process_count}")
  return value // process_count


class StreamDef(NamedTuple):
  """One stream of a training iterator: where its records come from, how its batched tf.data graph
  is built from a (position, counts) reading state, and the batch contract it must satisfy."""

  source: StreamSource
  build: Callable[[int, List[int]], tf.data.Dataset]
  spec: Dict[str, tuple]


class TrainIterator:
  """`next(it)` → {stream: {field: np.ndarray}} with per-host batch sizes (batch.py contract), or the
  single stream's fields directly when `flat` (fine-tuning tasks have one stream)."""

  def __init__(
    self,
    cfg,
    streams: Optional[Dict[str, StreamDef]] = None,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    keep_debug: bool = False,
    flat: bool = False,
    names=STREAMS,
  ):
    self._text = None
    if streams is None:  # the pre-training streams of a data config (those of `names` it enables)
      self._text = TextStage(cfg)
      streams = _pretrain_streams(cfg, int(seed), process_index, process_count, self._text, names)
    self.cfg, self.seed = cfg, int(seed)
    self.process_index, self.process_count = process_index, process_count
    self.keep_debug, self.flat = keep_debug, flat
    if not streams:
      raise ValueError("data config: no stream enabled (every stream has enabled=False or no datasets)")
    if flat and len(streams) != 1:
      raise ValueError(f"flat iterator: expected one stream, got {sorted(streams)}")
    self._defs = dict(streams)
    self.streams = list(streams)
    self._state = {s: {"position": 0, "counts": [0] * len(d.source.sources), "skipped": 0} for s, d in streams.items()}
    self._stats = {s: {"batches": 0, "records": 0, "dropped_corrupt": 0} for s in self.streams}
    if "region" in self.streams:
      self._stats["region"]["skipped_invalid_anchor"] = 0
    self._iters = None  # built on first use, so a restore right after creation builds once
    _LIVE.add(self)

  @property
  def _sources(self):
    return {s: d.source for s, d in self._defs.items()}

  def _dataset(self, s):
    st = self._state[s]
    ds = self._defs[s].build(st["position"], st["counts"], st.get("skipped", 0))
    opts = tf.data.Options()
    opts.deterministic = True
    if self.cfg.get("threadpool_size", 0):
      opts.threading.private_threadpool_size = self.cfg.threadpool_size
    return ds.prefetch(self.cfg.get("prefetch", 2)).with_options(opts)

  def _build(self):
    self._iters = {s: iter(self._dataset(s).as_numpy_iterator()) for s in self.streams}

  def close(self):
    self._iters = None

  # ------------------------------------------------------------------ iteration
  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, Dict[str, np.ndarray]]:
    if self._iters is None:
      self._build()
    out = {}
    for s in self.streams:
      try:
        b = next(self._iters[s])
      except StopIteration:
        err = self._defs[s].source.error
        raise RuntimeError(f"{s} stream ended unexpectedly (streams are infinite); last read error: {err!r}") from err
      pos, counts = b["_pos"], b["_counts"]
      last = int(np.argmax(pos))
      before = self._state[s]
      self._state[s] = {
        "position": int(pos[last]) + 1,
        "counts": [int(x) for x in counts[last]],
        "skipped": int(b["_skipped"][last]),
      }
      st = self._stats[s]
      st["batches"] += 1
      st["records"] += len(pos)
      # Positions missing inside this batch's range were skipped by the record rule (counted) or
      # dropped as corrupt by the decode stage (the rest).
      skipped = self._state[s]["skipped"] - before.get("skipped", 0)
      st["dropped_corrupt"] += self._state[s]["position"] - before["position"] - len(pos) - skipped
      if s == "region":
        st["skipped_invalid_anchor"] += skipped
      if not self.keep_debug:
        b = {k: v for k, v in b.items() if not k.startswith("_")}
      batch_contract.check_stream(s, {k: v for k, v in b.items() if not k.startswith("_")}, self._defs[s].spec)
      out[s] = b
    return out[self.streams[0]] if self.flat else out

  # ------------------------------------------------------------------ state
  def get_state(self) -> Dict:
    return {
      "version": 1,
      "seed": self.seed,
      "process_index": self.process_index,
      "process_count": self.process_count,
      "streams": json.loads(json.dumps(self._state)),
      "stats": json.loads(json.dumps(self._stats)),
    }

  def set_state(self, state: Dict) -> None:
    for key in ("seed", "process_index", "process_count"):
      if state.get(key) != getattr(self, key):
        raise ValueError(f"input state: {key}={state.get(key)} was saved, this iterator has {getattr(self, key)}")
    missing = set(self.streams) - set(state["streams"])
    if missing:
      raise ValueError(f"input state: no saved position for streams {sorted(missing)}")
    self._state = {s: {"skipped": 0, **state["streams"][s]} for s in self.streams}
    self._stats = {s: {**self._stats[s], **state["stats"][s]} for s in self.streams}
    self._iters = None

  def save_state(self, path: str) -> str:
    fs.path(path).mkdir(parents=True, exist_ok=True)
    f = fs.path(path) / f"{STATE_FILE[:-5]}.{self.process_index}.json"
    f.write_text(json.dumps(self.get_state()))
    return str(f)

  def restore_state(self, path: str) -> None:
    f = fs.path(path) / f"{STATE_FILE[:-5]}.{self.process_index}.json"
    if not f.exists():
      raise FileNotFoundError(f"input pipeline state: {f} not found")
    self.set_state(json.loads(f.read_text()))

  def stats(self) -> Dict[str, Dict[str, int]]:
    """Per stream: batches and records delivered, corrupt records dropped."""
    return json.loads(json.dumps(self._stats))


def region_groups(c, process_count: int) -> int:
  """Number of ITM groups in a host's region batch (config: region.group_images / group_texts)."""
  r = c.region
  bi = _per_host(r.num_images, process_count, "region.num_images")
  bt = _per_host(r.batch_size, process_count, "region.batch_size")
  gi, gt = int(r.get("group_images", 0)), int(r.get("group_texts", 0))
  if not gi and not gt:
    return 1
  if gi <= 0 or gt <= 0 or bi % gi or bt % gt or bi // gi != bt // gt:
    raise ValueError(
      f"region ITM groups: group_images={gi} / group_texts={gt} must both be set and cut this host's "
      f"{bi} images / {bt} texts (num_images={r.num_images}, batch_size={r.batch_size} over "
      f"{process_count} hosts) into the same number of groups"
    )
  return bi // gi


def _mtext_text_config(c):
  """The data config with the parallel-text stream's own lengths (official `mtexts.max_tokens` & co.)."""
  m = c.mtext
  t = ml_collections.ConfigDict(c.to_dict())
  for k in ("max_tokens", "max_masks", "mask_prob"):
    t[k] = m.get(k, c[k])
  return t


def _pretrain_streams(
  c, seed: int, process_index: int, process_count: int, text, names=STREAMS
) -> Dict[str, StreamDef]:
  out = {}
  unknown = sorted(set(names) - set(STREAM_IDS))
  if unknown:
    raise ValueError(f"streams {unknown}: expected some of {sorted(STREAM_IDS)}")
  for s in names:
    if not stream_enabled(c, s):
      continue
    if s == "mtext":
      out[s] = _mtext_stream_def(c, seed, process_index, process_count)
      continue
    source = StreamSource(
      c.data_dir,
      [tuple(d) for d in c[s].datasets],
      seed=seed,
      stream_id=STREAM_IDS[s],
      process_index=process_index,
      process_count=process_count,
    )
    bt = _per_host(c[s].batch_size, process_count, f"{s}.batch_size")
    images = _per_host(c.region.num_images, process_count, "region.num_images") if s == "region" else 0
    spec = batch_contract.stream_spec(
      s,
      batch_size=bt,
      image_res=c.image_res,
      patch_size=c.patch_size,
      max_tokens=c.max_tokens,
      max_masks=c.max_masks,
      num_images=images,
      num_frames=c.video.num_frames if s == "video" else 0,
    )

    groups = region_groups(c, process_count) if s == "region" else 1

    def build(position, counts, skipped, s=s, source=source, bt=bt, images=images, groups=groups):
      kw = dict(position=position, counts=counts, skipped=skipped, seed=seed)
      if s == "image":
        return image_stream(source, c, text, batch_size=bt, **kw)
      if s == "video":
        return video_stream(source, c, text, batch_size=bt, **kw)
      return region_stream(source, c, text, num_images=images, num_texts=bt, num_groups=groups, **kw)

    out[s] = StreamDef(source, build, spec)
  return out


def _mtext_stream_def(c, seed: int, process_index: int, process_count: int) -> StreamDef:
  source = StreamSource(
    c.data_dir,
    [tuple(d) for d in c.mtext.datasets],
    seed=seed,
    stream_id=STREAM_IDS["mtext"],
    process_index=process_index,
    process_count=process_count,
  )
  bt = _per_host(c.mtext.batch_size, process_count, "mtext.batch_size")
  tc = _mtext_text_config(c)
  spec = batch_contract.stream_spec(
    "mtext",
    batch_size=bt,
    image_res=c.image_res,
    patch_size=c.patch_size,
    max_tokens=tc.max_tokens,
    max_masks=tc.max_masks,
  )
  stage = TextStage(tc)

  def build(position, counts, skipped):
    kw = dict(position=position, counts=counts, skipped=skipped, seed=seed, batch_size=bt)
    return mtext_stream(source, c, stage, stage.tok, **kw)

  return StreamDef(source, build, spec)


def create_train_iterator(
  data_cfg,
  *,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  keep_debug: bool = False,
  streams=STREAMS,
) -> TrainIterator:
  """The pre-training iterator over the enabled streams among `streams`: image / region / video for the
  English pre-training; a multilingual (CCLM) task passes CCLM_STREAMS (with the parallel text `mtext`)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, process_count={process_count})")
  return TrainIterator(
    data_cfg,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    keep_debug=keep_debug,
    names=tuple(streams),
  )


# ---------------------------------------------------------------------- evaluation


def _first_alt(s: bytes) -> str:
  return s.decode("utf-8").split(ALT_SEP)[0]


def load_eval_split(data_cfg, name: str, split: str, max_examples: Optional[int] = None):
  """Held-out split with the test transform (plain R×R resize).

  Image datasets → images [N,R,R,3]; texts = every whole-image caption (is_image=1) then every element
  text (attribute + caption, is_image=0) with text_image [T], text_bbox [T,4] (cx,cy,w,h)/R and
  patch_mask [T,1+N]. Video datasets → frames [N,F,R,R,3] (eval frame choice of docs/reference.md §2.4).
  """
  c = data_cfg
  src = records.open_source(c.data_dir, name, split)
  n = len(src) if max_examples is None else min(len(src), int(max_examples))
  r = c.image_res
  tok = Tokenizer(c.vocab_file, c.max_tokens)
  # A fixed signature: called with Python bytes, a plain tf.function would retrace for every image.
  resize = tf.function(lambda b: augment.test_transform(decode(b), r), input_signature=[tf.TensorSpec([], tf.string)])
  texts, text_image, boxes, is_image, pixels = [], [], [], [], []
  video = "frames" in src[0]
  for i in range(n):
    rec = src[i]
    if video:
      f, nf = c.video.num_frames, len(rec["frames"])
      ids = (
        [j % nf for j in range(f)] if nf <= f else [int(j * (nf // f) + min(j, nf - f * (nf // f))) for j in range(f)]
      )
      pixels.append(np.stack([resize(rec["frames"][j]).numpy() for j in ids]))
    else:
      pixels.append(resize(rec["image"]).numpy())
    cap = _first_alt(rec["caption"])
    if cap:
      texts.append(cap), text_image.append(i), boxes.append((0.0, 0.0, r, r)), is_image.append(1)
    if video:
      continue
    # The training stream's element rule with the whole image as the crop: stored boxes are not
    # clipped, and one less than min_perc_in_image inside the image gives no text.
    kept, rboxes = transform_boxes(
      tf.constant(rec["boxes"]),
      (0, 0, int(rec["width"]), int(rec["height"])),
      False,
      float(r),
      c.region.min_perc_in_image,
    )
    for j in np.nonzero(kept.numpy())[0]:
      attr, elem_cap = _first_alt(rec["elem_attrs"][j]), _first_alt(rec["elem_caption"][j])
      texts.append(f"{attr} {elem_cap}" if attr else elem_cap)
      text_image.append(i), boxes.append(rboxes[j].numpy()), is_image.append(0)
  ids, mask = tok(pre_caption(tf.constant(texts), c.max_tokens))
  bx = np.asarray(boxes, np.float64).reshape(-1, 4)
  out = {
    "images" if not video else "frames": np.stack(pixels).astype(np.float32),
    "text_ids": ids.numpy(),
    "text_mask": mask.numpy(),
    "text_image": np.asarray(text_image, np.int32),
    "is_image": np.asarray(is_image, np.int32),
    "texts": np.asarray(texts, dtype=object),
  }
  if not video:
    out["text_bbox"] = np.stack(
      [(bx[:, 0] + bx[:, 2] / 2) / r, (bx[:, 1] + bx[:, 3] / 2) / r, bx[:, 2] / r, bx[:, 3] / r], 1
    ).astype(np.float32)
    pm = patch_masks(tf.constant(bx), r, c.patch_size).numpy()
    pm[out["is_image"] == 1] = 1
    out["patch_mask"] = pm
  return out

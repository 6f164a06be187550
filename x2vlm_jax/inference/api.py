"""Inference API for notebooks and evaluation (its method names are a public contract: README "Inference").

    m = load(checkpoint_dir)
    image_embeds, image_feat = m.encode_image(preprocess_images(uint8_images, m.config.image_res))
    text_embeds, text_feat = m.encode_text(ids, mask)
    logits = m.itc_logits(image_feat, text_feat)   # cosine / temperature (`similarity`: its old name)

Every method validates its inputs on the host (clear `ValueError` naming the argument, what was
expected and what was given) and then calls a jitted function; calling again with the same shapes does
not recompile. Inputs may be numpy or jax arrays; `image_mask=None` means all ones.
"""

import os
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from x2vlm_jax import params_io
from x2vlm_jax.inference.images import normalize, read_image, resize_uint8
from x2vlm_jax.models import X2VLM, presets


def preprocess_images(images, image_res: int) -> np.ndarray:
  """Images → float32 NHWC at image_res, CLIP-normalised: the official test transform (PIL bicubic
  resize to R×R, aspect not kept, docs/reference.md §4.3). `images`: a uint8 array [B,H,W,3] or [H,W,3], or a list
  whose items are uint8 [H,W,3] arrays of any size, PIL images or file paths (local or gs://)."""
  from PIL import Image

  if isinstance(images, np.ndarray) and images.ndim in (3, 4):
    arr = images[None] if images.ndim == 3 else images
    if arr.shape[-1] != 3:
      raise ValueError(f"images: expected uint8 [B,H,W,3] (or [H,W,3]), got shape {images.shape}")
    items = list(arr)
  elif isinstance(images, (list, tuple)):
    items = list(images)
  else:
    raise ValueError(f"images: expected a uint8 array or a list of images/paths, got {type(images).__name__}")
  out = []
  for i, im in enumerate(items):
    if isinstance(im, str):
      out.append(read_image(im, image_res))
      continue
    if not isinstance(im, Image.Image):
      im = np.asarray(im)
      if im.dtype != np.uint8:
        raise ValueError(f"images: expected dtype uint8 (0..255), got {im.dtype} (item {i})")
      if im.ndim != 3 or im.shape[-1] != 3:
        raise ValueError(f"images: expected [H,W,3] RGB, got shape {im.shape} (item {i})")
      im = Image.fromarray(im)
    out.append(resize_uint8(im, image_res))
  return normalize(np.stack(out))


def _shape_str(x) -> str:
  return f"shape {tuple(np.shape(x))} dtype {np.asarray(x).dtype if not hasattr(x, 'dtype') else x.dtype}"


class X2VLMInference:
  """A converted or trained X²-VLM with jitted, validated entry points."""

  def __init__(self, model: X2VLM, cfg, vocab_file: Optional[str] = None):
    self.config = cfg
    self.vocab_file = vocab_file
    self._tokenizer = None
    self._graphdef, self._state = nnx.split(model)
    self.num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    g = cfg.image_res // cfg.patch_size
    self._num_tokens = 1 + g * g
    self._jit = {}

  # --- plumbing ----------------------------------------------------------------------------------
  def _call(self, method: str, *args):
    fn = self._jit.get(method)
    if fn is None:
      graphdef = self._graphdef

      def run(state, *a):
        return getattr(nnx.merge(graphdef, state), method)(*a)

      fn = self._jit[method] = jax.jit(run)
    return fn(self._state, *args)

  def _float(self, name, x, shape):
    if not hasattr(x, "shape"):
      x = np.asarray(x)
    if tuple(x.shape) != tuple(shape) or not jnp.issubdtype(x.dtype, jnp.floating):
      want = "x".join("B" if s is None else str(s) for s in shape)
      raise ValueError(f"{name}: expected float [{want}], got {_shape_str(x)}")
    return jnp.asarray(x, jnp.float32)

  @staticmethod
  def _dims(name, x, rank):
    shape = tuple(np.shape(x))
    if len(shape) != rank:
      raise ValueError(f"{name}: expected rank {rank}, got shape {shape}")
    return shape

  def _image_embeds(self, image_embeds, name="image_embeds"):
    b = self._dims(name, image_embeds, 3)[0]
    return self._float(name, image_embeds, (b, self._num_tokens, self.config.vision.width)) if b else None

  def _mask(self, name, mask, shape):
    if mask is None:
      return jnp.ones(shape, jnp.int32)
    m = np.asarray(mask)
    if m.shape != tuple(shape):
      raise ValueError(f"{name}: expected shape {tuple(shape)}, got {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or m.dtype == bool) or ((m != 0) & (m != 1)).any():
      raise ValueError(
        f"{name}: expected a 0/1 integer mask, got dtype {m.dtype} with values {np.unique(m)[:5].tolist()}"
      )
    return jnp.asarray(m, jnp.int32)

  def _ids(self, ids, mask, ids_name="ids", mask_name="mask"):
    a = np.asarray(ids)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
      raise ValueError(f"{ids_name}: expected integer [B, L], got {_shape_str(a)}")
    t = self.config.text
    if a.shape[1] > t.max_positions or a.shape[1] == 0:
      raise ValueError(f"{ids_name}: expected length 1..{t.max_positions}, got {a.shape[1]}")
    if a.size and (a.min() < 0 or a.max() >= t.vocab_size):
      raise ValueError(f"{ids_name}: expected ids in [0, {t.vocab_size}), got range [{a.min()}, {a.max()}]")
    if mask is None:
      raise ValueError(f"{mask_name}: expected a 0/1 mask of shape {a.shape}, got None")
    return jnp.asarray(a, jnp.int32), self._mask(mask_name, mask, a.shape)

  def _text_embeds(self, text_embeds, text_mask, batch):
    b, length, _ = self._dims("text_embeds", text_embeds, 3)
    if b != batch:
      raise ValueError(f"text_embeds: expected batch {batch} (as image_embeds), got {b}")
    x = self._float("text_embeds", text_embeds, (b, length, self.config.text.hidden))
    if text_mask is None:
      raise ValueError(f"text_mask: expected a 0/1 mask of shape {(b, length)}, got None")
    return x, self._mask("text_mask", text_mask, (b, length))

  def _tok(self, what: str = "tokenize"):
    if self._tokenizer is None:
      if not self.vocab_file:
        raise ValueError(
          f"{what}: this model has no vocabulary (its directory has no vocab.txt / sentencepiece.bpe.model); "
          "pass vocab_file= to inference.load"
        )
      from x2vlm_jax.inference.tokenizer import Tokenizer

      self._tokenizer = Tokenizer(self.vocab_file, 40)
    return self._tokenizer

  def _jitted(self, key, fn):
    """A jitted fn(model, *args) over this model's state, compiled once per key (and shapes)."""
    if key not in self._jit:
      graphdef = self._graphdef
      self._jit[key] = jax.jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a))
    return self._jit[key]

  def _pixels(self, images):
    """Float CLIP-normalised [B,R,R,3] as they are, anything else through `preprocess_images`."""
    if hasattr(images, "shape") and len(images.shape) == 4 and jnp.issubdtype(images.dtype, jnp.floating):
      r = self.config.image_res
      return self._float("images", images, (images.shape[0], r, r, 3))
    return jnp.asarray(preprocess_images(images, self.config.image_res))

  # --- the API -----------------------------------------------------------------------------------
  def tokenize(self, texts, max_tokens: int = 40, clean: Optional[int] = 30):
    """texts → (ids, mask) [B, max_tokens] with the checkpoint's own vocabulary (its vocab.txt): the
    ids of the data pipeline. `clean`: the official pre_caption word limit (None: texts as given)."""
    return self._tok()(list(texts), max_tokens, clean=clean)

  def answer(
    self,
    images,
    questions,
    answer_list=None,
    *,
    k: int = 128,
    double_count_first: bool = True,
    num_beams: int = 3,
    search: str = "beam",
    max_answer_tokens: int = 10,
    max_tokens: int = 64,
    max_words: int = 50,
  ) -> List[str]:
    """VQA (docs/reference.md §5.2): one answer per (image, question). With `answer_list` the official ranking
    (first-token top-k, teacher-forced re-scoring, `double_count_first` as officially); without it a
    free-form answer (greedy or beam search over at most max_answer_tokens tokens). images: float
    CLIP-normalised [B,R,R,3] or anything `preprocess_images` takes; questions: B strings
    (`pre_question`-ed with max_words, as at the official test)."""
    from x2vlm_jax.inference import generation
    from x2vlm_jax.text_clean import pre_question

    if not self.config.heads.decoder_layers:
      raise ValueError(
        "answer: this checkpoint has no VQA answer decoder (heads.decoder_layers = 0); "
        "fine-tune with configs/finetune/vqa2_base.py first"
      )
    pixels = self._pixels(images)
    if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
      raise ValueError("questions: expected a list of strings")
    if len(questions) != pixels.shape[0]:
      raise ValueError(f"questions: expected {pixels.shape[0]} (one per image), got {len(questions)}")
    tok = self._tok("answer")
    generation.check_vocab(tok, self.config, "answer")
    ids, mask = tok([pre_question(q, max_words) for q in questions], max_tokens)
    if answer_list is not None:
      generation.check_answer_list(answer_list)
      a_ids, a_mask = generation.tokenize_answers(tok, answer_list)
      k = min(int(k), len(answer_list))
      fn = self._jitted(
        ("rank", k, bool(double_count_first)),
        lambda m, *a: generation.rank_batch(m, *a, k=k, double_count_first=bool(double_count_first)),
      )
      idx, _ = fn(self._state, pixels, ids, mask, a_ids, a_mask)
      return [answer_list[int(i)] for i in np.asarray(idx)]
    spec = dict(
      bos_id=tok.cls_id,
      eos_id=tok.sep_id,
      pad_id=tok.pad_id,
      num_beams=int(num_beams),
      max_len=int(max_answer_tokens),
      search=search,
    )
    fn = self._jitted(
      ("generate_answer",) + tuple(sorted(spec.items())), lambda m, *a: generation.answer_batch(m, *a, **spec)
    )
    return generation.decode_all(tok, fn(self._state, pixels, ids, mask))

  def caption(
    self,
    images,
    *,
    prompt: str = "a picture of ",
    num_beams: int = 3,
    max_length: int = 50,
    min_length: int = 5,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 3,
  ) -> List[str]:
    """Captions (docs/reference.md §5.5, the released generation config by default) with the MLM head: beam search
    from [CLS] + prompt; the prompt is not part of the output."""
    from x2vlm_jax.inference import generation

    pixels = self._pixels(images)
    tok = self._tok("caption")
    generation.check_vocab(tok, self.config, "caption")
    spec = dict(
      prompt_ids=generation.prompt_ids(tok, prompt),
      mask_id=tok.mask_id,
      eos_id=tok.sep_id,
      pad_id=tok.pad_id,
      num_beams=int(num_beams),
      max_len=int(max_length),
      min_length=int(min_length),
      no_repeat_ngram=int(no_repeat_ngram),
      length_penalty=float(length_penalty),
    )
    fn = self._jitted(("caption",) + tuple(sorted(spec.items())), lambda m, x: generation.caption_batch(m, x, **spec))
    return generation.decode_all(tok, fn(self._state, pixels))

  def encode_image(self, images):
    """images NHWC float32, CLIP-normalised, at config.image_res → (image_embeds [B,1+N,D], image_feat [B,E])."""
    r = self.config.image_res
    shape = tuple(np.shape(images))
    if len(shape) == 4 and shape[1:3] != (r, r) and shape[-1] == 3:
      raise ValueError(
        f"images: expected resolution {r}x{r} for this checkpoint (use preprocess_images or "
        f"convert the checkpoint with --image_res), got {shape[1]}x{shape[2]}"
      )
    if hasattr(images, "dtype") and np.dtype(images.dtype) == np.uint8:
      raise ValueError("images: expected float32 CLIP-normalised images, got uint8 (use preprocess_images)")
    x = self._float("images", images, (shape[0] if shape else 0, r, r, 3))
    return self._call("encode_image", x)

  def encode_video(self, frames):
    """frames [B,F,R,R,3] float32 → (video_embeds [B,1+N,D], video_feat [B,E])."""
    shape = tuple(np.shape(frames))
    r = self.config.image_res
    if len(shape) != 5:
      raise ValueError(f"frames: expected [B,F,{r},{r},3], got shape {shape}")
    if self.config.num_frames and shape[1] > self.config.num_frames:
      raise ValueError(f"frames: this model has {self.config.num_frames} frame embeddings, got {shape[1]} frames")
    return self._call("encode_video", self._float("frames", frames, (shape[0], shape[1], r, r, 3)))

  def encode_text(self, ids, mask):
    """ids/mask [B,L] → (text_embeds [B,L,H] (layer fusion_start-1 output), text_feat [B,E])."""
    ids, mask = self._ids(ids, mask)
    return self._call("encode_text", ids, mask)

  def fuse(self, image_embeds, image_mask, text_embeds, text_mask):
    """Fusion layers on precomputed text_embeds cross-attending to the visual tokens → [B,L,H]."""
    v = self._image_embeds(image_embeds)
    vm = self._mask("image_mask", image_mask, v.shape[:2])
    t, tm = self._text_embeds(text_embeds, text_mask, v.shape[0])
    return self._call("fuse", v, vm, t, tm)

  def itm_logits(self, image_embeds, image_mask, text_embeds, text_mask):
    v = self._image_embeds(image_embeds)
    vm = self._mask("image_mask", image_mask, v.shape[:2])
    t, tm = self._text_embeds(text_embeds, text_mask, v.shape[0])
    return self._call("itm_logits", v, vm, t, tm)

  def mlm_logits(self, ids, mask, image_embeds, image_mask):
    ids, mask = self._ids(ids, mask)
    v = self._image_embeds(image_embeds)
    if v.shape[0] != ids.shape[0]:
      raise ValueError(f"image_embeds: expected batch {ids.shape[0]} (as ids), got {v.shape[0]}")
    vm = self._mask("image_mask", image_mask, v.shape[:2])
    return self._call("mlm_logits", ids, mask, v, vm)

  def predict_box(self, image_embeds, text_embeds, text_mask):
    v = self._image_embeds(image_embeds)
    t, tm = self._text_embeds(text_embeds, text_mask, v.shape[0])
    return self._call("predict_box", v, t, tm)

  def region_embeds(self, image_embeds, patch_masks, image_index):
    v = self._image_embeds(image_embeds)
    pm = np.asarray(patch_masks)
    if pm.ndim != 2 or pm.shape[1] != self._num_tokens:
      raise ValueError(f"patch_masks: expected [R, {self._num_tokens}], got shape {pm.shape}")
    idx = np.asarray(image_index)
    if idx.shape != (pm.shape[0],) or not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"image_index: expected integer [{pm.shape[0]}], got {_shape_str(idx)}")
    if idx.size and (idx.min() < 0 or idx.max() >= v.shape[0]):
      raise ValueError(f"image_index: expected values in [0, {v.shape[0]}), got [{idx.min()}, {idx.max()}]")
    pm = self._mask("patch_masks", pm, pm.shape)
    if pm.shape[0] and int(jnp.min(pm[:, 1:].sum(-1))) == 0:
      raise ValueError("patch_masks: every region needs at least one patch (slot 1..N), got an empty region")
    return self._call("region_embeds", v, pm, jnp.asarray(idx, jnp.int32))

  def itc_logits(self, image_feat, text_feat):
    """[N_img, N_txt] ITC logits: the cosine similarities of the (unit-norm) features divided by the
    learnt temperature, what the ITC loss takes a softmax over (docs/reference.md §3.1). The cosines
    themselves: `image_feat @ text_feat.T` (what `retrieval.rank` reports as `cosine`)."""
    e = self.config.embed_dim
    i = self._float("image_feat", image_feat, (np.shape(image_feat)[0] if np.ndim(image_feat) else 0, e))
    t = self._float("text_feat", text_feat, (np.shape(text_feat)[0] if np.ndim(text_feat) else 0, e))
    return self._call("similarity", i, t)

  def similarity(self, image_feat, text_feat):
    """The former name of `itc_logits` (kept: notebooks call it); logits, not cosines."""
    return self.itc_logits(image_feat, text_feat)


def from_params(cfg, params=None, *, seed: int = 0, vocab_file: Optional[str] = None) -> X2VLMInference:
  """Wraps params (pure dict) — or freshly initialised random weights when params is None."""
  model = X2VLM(cfg, rngs=nnx.Rngs(seed))
  if params is not None:
    params_io.into_model(model, params)
  return X2VLMInference(model, cfg, vocab_file)


def save_random(
  directory: str,
  preset: str = "tiny",
  *,
  image_res: Optional[int] = None,
  vocab_file: Optional[str] = None,
  seed: int = 0,
  decoder_layers: int = 0,
) -> str:
  """Writes a randomly initialised checkpoint (with a vocabulary: default the embedded `shapes` one)
  that `load` reads: for trying the API, CI and notebooks without weights at hand → `directory`.
  decoder_layers > 0 adds a VQA answer decoder (`answer` needs one)."""
  # The embedded `shapes` vocabulary (x2vlm_jax.data.config.SHAPES_VOCAB), found by path: inference sits
  # below the input pipeline and does not import it.
  shapes_vocab = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "shapes_vocab.txt")
  cfg = presets.get_preset(preset, **({"image_res": image_res} if image_res else {}))
  cfg.heads.decoder_layers = int(decoder_layers)
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(seed)), nnx.Param))
  params_io.save(directory, cfg, params, vocab_file=vocab_file or shapes_vocab)
  return directory


def load(
  checkpoint_dir: str,
  *,
  dtype: Optional[str] = None,
  attention_impl: Optional[str] = None,
  vocab_file: Optional[str] = None,
  scan_layers: Optional[bool] = None,
):
  """Loads a directory written by tools/convert_checkpoint.py or the trainer's export (with its
  vocab.txt, unless `vocab_file` names another). scan_layers: the model's layout (default: the one
  the checkpoint was written in; either layout loads either checkpoint, x2vlm_jax/params_layout.py)."""
  cfg = params_io.load_config(checkpoint_dir)
  if scan_layers is not None:
    cfg.scan_layers = bool(scan_layers)
  if dtype is not None:
    cfg.dtype = dtype
  if attention_impl is not None:
    cfg.attention_impl = attention_impl
  presets.validate(cfg)
  cfg, params = params_io.load(checkpoint_dir, cfg)
  return from_params(cfg, params, vocab_file=vocab_file or params_io.vocab_file(checkpoint_dir))

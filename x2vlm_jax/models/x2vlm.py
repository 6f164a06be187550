"""X²-VLM: vision tower + one BERT stack + contrastive projections and heads (docs/reference.md §1.5, §1.6)."""

import jax
import jax.numpy as jnp
from flax import nnx

from x2vlm_jax.models import layers, presets
from x2vlm_jax.models.decoder import AnswerDecoder
from x2vlm_jax.models.regions import region_pool, video_pool
from x2vlm_jax.models.text import TextStack
from x2vlm_jax.models.vision import VisionTower
from x2vlm_jax.models.xlmr import XLMRStack


def l2_normalize(x, eps: float = 1e-12):
  """torch.nn.functional.normalize: x / max(‖x‖, eps), computed in float32."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class X2VLM(nnx.Module):
  """The pre-training model. Methods are the recipes of docs/reference.md §1.6; `rng=None` means deterministic."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    presets.validate(cfg)
    dtype = jnp.dtype(cfg.dtype)
    d, h, e = cfg.vision.width, cfg.text.hidden, cfg.embed_dim
    self.vision = VisionTower(cfg, rngs=rngs)
    # One interface, two text sides (docs/reference.md §1.5 English stack, §1.8 XLM-R + cross encoder).
    self.text = XLMRStack(cfg, rngs=rngs) if cfg.get("text_encoder", "bert") == "xlmr" else TextStack(cfg, rngs=rngs)
    torch_init = dict(kernel_init=layers.torch_default_kernel, torch_bias=True)
    self.vision_proj = layers.dense(d, e, ("embed", "joint"), rngs=rngs, dtype=dtype, **torch_init)
    self.text_proj = layers.dense(h, e, ("embed", "joint"), rngs=rngs, dtype=dtype, **torch_init)
    self.temp = nnx.Param(jnp.asarray(cfg.temp_init, jnp.float32), out_sharding=(), eager_sharding=False)
    self.itm_head = layers.MLPHead(h, 2, eps=cfg.head_layer_norm_eps, rngs=rngs, dtype=dtype)
    self.bbox_head = layers.MLPHead(h, 4, eps=cfg.head_layer_norm_eps, rngs=rngs, dtype=dtype)
    if cfg.num_frames > 0:
      self.frame_pos = nnx.Param(
        layers.trunc_normal(rngs.params(), (1, cfg.num_frames, 1, d)),
        out_sharding=(None, None, None, "embed"),
        eager_sharding=False,
      )
    else:
      self.frame_pos = None
    # Task heads (docs/reference.md §5.3, §5.6): new parameters of fine-tuning, official init = PyTorch default.
    heads = cfg.heads
    self.nlvr_head = (
      layers.MLPHead(2 * h, 2, eps=cfg.head_layer_norm_eps, rngs=rngs, dtype=dtype) if heads.nlvr else None
    )
    self.cls_head = (
      layers.MLPHead(h, heads.num_labels, eps=cfg.head_layer_norm_eps, rngs=rngs, dtype=dtype)
      if heads.num_labels
      else None
    )
    # VQA (docs/reference.md §5.2): new BERT-init parameters; `decoder_from_fusion` gives the official init.
    self.decoder = AnswerDecoder(cfg, rngs=rngs) if heads.decoder_layers else None

  # --- unimodal encoders -------------------------------------------------------------------------
  def encode_image(self, images, rng=None):
    embeds = self.vision(images, rng)
    return embeds, self.image_feat(embeds)

  def encode_video(self, frames, rng=None):
    """frames [B,F,H,W,3]: every frame through the same tower, + frame embedding, temporal mean."""
    b, f = frames.shape[:2]
    per_frame = self.vision(frames.reshape((b * f,) + frames.shape[2:]), rng)
    return self.video_embeds(per_frame.reshape((b, f) + per_frame.shape[1:]))

  def video_embeds(self, per_frame):
    """The vision tower's tokens of each frame [B,F,1+N,D] → the video's tokens (+ frame embedding,
    temporal mean) and feature."""
    frame_pos = self.frame_pos[...] if self.frame_pos is not None else None
    embeds = video_pool(per_frame, frame_pos)
    return embeds, self.image_feat(embeds)

  def region_embeds(self, image_embeds, patch_masks, image_index):
    embeds = region_pool(image_embeds, patch_masks, image_index)
    return embeds, self.image_feat(embeds)

  def encode_text(self, ids, mask, rng=None):
    embeds = self.text.text(ids, mask, rng)
    return embeds, self.text_feat(embeds)

  def image_feat(self, image_embeds):
    return l2_normalize(self.vision_proj(image_embeds[:, 0]))

  def text_feat(self, text_embeds):
    return l2_normalize(self.text_proj(text_embeds[:, 0]))

  # --- cross-modal -----------------------------------------------------------------------------
  def fuse(self, image_embeds, image_mask, text_embeds, text_mask, rng=None):
    """image_embeds may have Bv < B rows (Bv | B): text rows r·R … r·R+R−1 are fused with image r, its
    keys/values computed once (see TextStack._run)."""
    return self.text.fusion(text_embeds, text_mask, image_embeds, image_mask, rng)

  def itm_logits(self, image_embeds, image_mask, text_embeds, text_mask, rng=None):
    return self.itm_from_fused(self.fuse(image_embeds, image_mask, text_embeds, text_mask, rng))

  def itm_from_fused(self, fused):
    """ITM logits [B, 2] (class 1 = match) of fused states [B, L, H] (their [CLS])."""
    return self.itm_head(fused[:, 0]).astype(jnp.float32)

  def cls_logits(self, vision_embeds, vision_mask, ids, mask, rng=None):
    """Classification (video QA, docs/reference.md §1.6 / §5.6): multi_modal over the text cross-attending to the
    visual tokens, `cls_head` on the fused [CLS]."""
    fused = self.text.multi_modal(ids, mask, vision_embeds, vision_mask, rng)
    return self.cls_head(fused[:, 0]).astype(jnp.float32)

  def mlm_hidden(self, ids, mask, image_embeds, image_mask, rng=None):
    return self.text.multi_modal(ids, mask, image_embeds, image_mask, rng)

  def mlm_logits(self, ids, mask, image_embeds, image_mask, rng=None):
    return self.text.mlm_logits(self.mlm_hidden(ids, mask, image_embeds, image_mask, rng)).astype(jnp.float32)

  def predict_box(self, image_embeds, text_embeds, text_mask, rng=None):
    """Box (cx, cy, w, h) ∈ (0,1) from the fused [CLS] against the FULL image (all-ones mask)."""
    return self.box_from_fused(self.fuse(image_embeds, None, text_embeds, text_mask, rng))

  def box_from_fused(self, fused):
    """Boxes (cx, cy, w, h) ∈ (0,1) of fused states [B, L, H] (their [CLS])."""
    return jax.nn.sigmoid(self.bbox_head(fused[:, 0]).astype(jnp.float32))

  # --- NLVR2 (docs/reference.md §5.3) ---------------------------------------------------------------------------
  def nlvr_logits(self, image0_embeds, image1_embeds, ids, mask, rng=None):
    """Logits [B, 2] (class 1 = True) of a statement about an image pair: the sentence in
    multi_modal mode against each image separately (full-image masks), the two fused [CLS]
    concatenated (image 0's first) → `nlvr_head`. Both passes run as one batch of 2B rows, which
    keeps the official independent dropout per pass (the token-position DropPath of docs/reference.md §1.4, off in
    NLVR2, would be shared between the halves)."""
    b = ids.shape[0]
    fused = self.text.multi_modal(
      jnp.concatenate([ids, ids]),
      jnp.concatenate([mask, mask]),
      jnp.concatenate([image0_embeds, image1_embeds]),
      None,
      rng,
    )[:, 0]
    return self.nlvr_head(jnp.concatenate([fused[:b], fused[b:]], axis=-1)).astype(jnp.float32)

  def similarity(self, image_feat, text_feat):
    return image_feat.astype(jnp.float32) @ text_feat.astype(jnp.float32).T / self.temp[...]

  # --- VQA (docs/reference.md §5.2) ---------------------------------------------------------------------------
  def vqa_memory(self, question_ids, question_mask, image_embeds, image_mask=None, rng=None):
    """Decoder memory: the 18-layer stack in multi_modal mode on the question, all positions [B,Lq,H]
    (used with `question_mask` as the memory mask)."""
    return self.text.multi_modal(question_ids, question_mask, image_embeds, image_mask, rng)

  def answer_logits(self, answer_ids, answer_mask, memory, memory_mask, rng=None):
    """Teacher-forced decoder logits [Ba, La, V]; Ba = R·B answers, R consecutive per question."""
    return self.decoder(answer_ids, answer_mask, memory, memory_mask, rng)

  def vqa_loss(self, answer_ids, answer_mask, answer_weights, memory, memory_mask, rng=None):
    """L = Σ_answers weight · (summed token CE of the answer) / #questions.

    answer_ids/answer_mask [B, A, La]: up to A answers per question (padding answers get weight 0);
    answer_weights [B, A]: #annotators giving it / #annotations (VQA) or 0.5 (VG). The question memory
    [B, Lq, H] is shared by its A answers inside the cross-attention instead of being repeated A times
    (the official `question_states += [state] * n`)."""
    b, a, la = answer_ids.shape
    nll = self.decoder.answer_nll(
      answer_ids.reshape(b * a, la), answer_mask.reshape(b * a, la), memory, memory_mask, rng
    )
    return jnp.sum(answer_weights.astype(jnp.float32) * nll.reshape(b, a)) / b

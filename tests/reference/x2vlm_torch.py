"""A small PyTorch reference of the official X²-VLM forward pass, written from docs/reference.md §1.2–§1.7.

It takes an OFFICIAL-key state dict (as in the released `.th` files, docs/reference.md §7.2) and evaluates it
functionally in float32, eval mode (no dropout / drop-path). Used only by the parity tests.
"""

import math

import torch
import torch.nn.functional as F


def beit_relative_position_index(grid: int) -> torch.Tensor:
  """BEiT's buffer, built the way the official code builds it (coords → relative coords → index)."""
  coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")).flatten(1)
  rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
  rel[:, :, 0] += grid - 1
  rel[:, :, 1] += grid - 1
  rel[:, :, 0] *= 2 * grid - 1
  n = (2 * grid - 1) ** 2
  index = torch.zeros((grid * grid + 1,) * 2, dtype=torch.long)
  index[1:, 1:] = rel.sum(-1)
  index[0, 0:] = n
  index[0:, 0] = n + 1
  index[0, 0] = n + 2
  return index


class X2VLMReference:
  def __init__(
    self,
    sd,
    *,
    vision_heads,
    text_heads,
    fusion_start,
    num_layers,
    patch_size=16,
    vision_eps=1e-6,
    text_eps=1e-12,
    head_eps=1e-5,
  ):
    self.sd = {k: torch.as_tensor(v) for k, v in sd.items()}
    self.vision_heads, self.text_heads = vision_heads, text_heads
    self.fusion_start, self.num_layers = fusion_start, num_layers
    self.patch = patch_size
    self.veps, self.teps, self.heps = vision_eps, text_eps, head_eps
    self.depth = len({k.split(".")[2] for k in sd if k.startswith("vision_encoder.blocks.")})

  def w(self, key):
    return self.sd[key]

  def linear(self, x, key):
    return F.linear(x, self.w(key + ".weight"), self.w(key + ".bias"))

  def ln(self, x, key, eps):
    return F.layer_norm(x, x.shape[-1:], self.w(key + ".weight"), self.w(key + ".bias"), eps)

  # --- vision tower (docs/reference.md §1.2) ------------------------------------------------------
  def _vision_attn(self, x, key, index):
    b, n, d = x.shape
    h = self.vision_heads
    bias = torch.cat([self.w(key + ".q_bias"), torch.zeros_like(self.w(key + ".v_bias")), self.w(key + ".v_bias")])
    qkv = F.linear(x, self.w(key + ".qkv.weight"), bias).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (d // h) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = self.w(key + ".relative_position_bias_table")
    rel = table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
    attn = (attn + rel[None]).softmax(-1)
    return self.linear((attn @ v).transpose(1, 2).reshape(b, n, d), key + ".proj")

  def vision_tokens(self, images_nchw):
    """→ [B, 1+N, D] = [mean(fc_norm(patches)), fc_norm(patches)] (official pooling)."""
    v = "vision_encoder."
    x = F.conv2d(
      images_nchw, self.w(v + "patch_embed.proj.weight"), self.w(v + "patch_embed.proj.bias"), stride=self.patch
    )
    grid = x.shape[-1]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([self.w(v + "cls_token").expand(x.shape[0], -1, -1), x], dim=1)
    index = beit_relative_position_index(grid)
    for i in range(self.depth):
      k = f"{v}blocks.{i}"
      x = x + self.w(k + ".gamma_1") * self._vision_attn(self.ln(x, k + ".norm1", self.veps), k + ".attn", index)
      y = self.linear(F.gelu(self.linear(self.ln(x, k + ".norm2", self.veps), k + ".mlp.fc1")), k + ".mlp.fc2")
      x = x + self.w(k + ".gamma_2") * y
    patches = self.ln(x[:, 1:], v + "fc_norm", self.veps)
    return torch.cat([patches.mean(1, keepdim=True), patches], dim=1)

  def encode_video(self, frames_nchw):
    """frames [B, F, 3, R, R] → per-frame tower + frame embedding → temporal mean (docs/reference.md §1.7)."""
    b, f = frames_nchw.shape[:2]
    x = self.vision_tokens(frames_nchw.flatten(0, 1))
    x = x.view(b, f, x.shape[1], x.shape[2]) + self.w("absolute_frame_pos_embed")[:, :f]
    return x.mean(1)

  def region_tokens(self, image_tokens, image_atts, idx_to_group_img):
    """docs/reference.md §1.2 step 7: region cls = masked mean of the patches of its image; the patches follow."""
    patches = image_tokens[idx_to_group_img][:, 1:]
    m = image_atts[:, 1:].to(patches.dtype).unsqueeze(-1)
    cls = (patches * m).sum(1) / m.sum(1)
    return torch.cat([cls.unsqueeze(1), patches], dim=1)

  # --- text stack (docs/reference.md §1.4) --------------------------------------------------------
  def _bert_attn(self, x, kv, mask_bias, key):
    b, lq, hdim = x.shape
    h = self.text_heads
    dh = hdim // h
    q = self.linear(x, key + ".self.query").view(b, lq, h, dh).transpose(1, 2)
    k = self.linear(kv, key + ".self.key").view(b, -1, h, dh).transpose(1, 2)
    v = self.linear(kv, key + ".self.value").view(b, -1, h, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + mask_bias
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, lq, hdim)
    return self.ln(self.linear(ctx, key + ".output.dense") + x, key + ".output.LayerNorm", self.teps)

  def embeddings(self, ids, positions=None, prefix="text_encoder.bert."):
    e = prefix + "embeddings."
    pos = torch.arange(ids.shape[1])[None] if positions is None else positions
    x = (
      F.embedding(ids, self.w(e + "word_embeddings.weight"))
      + F.embedding(pos, self.w(e + "position_embeddings.weight"))
      + F.embedding(torch.zeros_like(ids), self.w(e + "token_type_embeddings.weight"))
    )
    return self.ln(x, e + "LayerNorm", self.teps)

  def layers(self, x, mask, start, end, vision=None, vision_mask=None, prefix="text_encoder.bert.", cross_from=None):
    # A [B, L] padding mask or a [B, L, L] attention mask (captioning, causal decoder), −10000 additive.
    self_bias = (1.0 - (mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]).float()) * -10000.0
    cross_from = self.fusion_start if cross_from is None else cross_from
    if vision is not None:
      if vision_mask is None:
        vision_mask = torch.ones(vision.shape[:2])
      cross_bias = (1.0 - vision_mask[:, None, None, :].float()) * -1e9
    for layer in range(start, end):
      k = f"{prefix}encoder.layer.{layer}"
      x = self._bert_attn(x, x, self_bias, k + ".attention")
      if layer >= cross_from and vision is not None:
        x = self._bert_attn(x, vision, cross_bias, k + ".crossattention")
      y = self.linear(F.gelu(self.linear(x, k + ".intermediate.dense")), k + ".output.dense")
      x = self.ln(y + x, k + ".output.LayerNorm", self.teps)
    return x

  def text(self, ids, mask):
    return self.layers(self.embeddings(ids), mask, 0, self.fusion_start)

  def fusion(self, text_embeds, mask, vision, vision_mask=None):
    return self.layers(text_embeds, mask, self.fusion_start, self.num_layers, vision, vision_mask)

  def multi_modal(self, ids, mask, vision=None, vision_mask=None, positions=None):
    return self.layers(self.embeddings(ids, positions), mask, 0, self.num_layers, vision, vision_mask)

  def answer_decoder_logits(self, ids, mask, memory, memory_mask, num_layers):
    """The VQA `text_decoder` (BertLMHeadModel, docs/reference.md §5.2): causal × padding self-attention mask,
    cross-attention to the question memory in every layer, head tied to its own word embeddings."""
    p = "text_decoder.bert."
    causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1]))[None] * mask[:, None, :].float()
    h = self.layers(self.embeddings(ids, prefix=p), causal, 0, num_layers, memory, memory_mask, prefix=p, cross_from=0)
    return self._lm_head(h, "text_decoder.cls.predictions.", p + "embeddings.word_embeddings.weight")

  # --- heads (docs/reference.md §1.5) -------------------------------------------------------------
  def mlp(self, x, key):
    return self.linear(F.gelu(self.ln(self.linear(x, key + ".0"), key + ".1", self.heps)), key + ".3")

  def image_feat(self, tokens):
    return F.normalize(self.linear(tokens[:, 0], "vision_proj"), dim=-1)

  def text_feat(self, text_embeds):
    return F.normalize(self.linear(text_embeds[:, 0], "text_proj"), dim=-1)

  def itm_logits(self, vision, vision_mask, text_embeds, mask):
    return self.mlp(self.fusion(text_embeds, mask, vision, vision_mask)[:, 0], "itm_head")

  def predict_box(self, vision, text_embeds, mask):
    return self.mlp(self.fusion(text_embeds, mask, vision, None)[:, 0], "bbox_head").sigmoid()

  def _lm_head(self, h, c, word_key):
    h = self.ln(F.gelu(self.linear(h, c + "transform.dense")), c + "transform.LayerNorm", self.teps)
    # The decoder weight is the (tied) word embedding; its bias is predictions.bias.
    return F.linear(h, self.w(word_key), self.w(c + "bias"))

  def mlm_logits(self, ids, mask, vision, vision_mask, positions=None):
    h = self.multi_modal(ids, mask, vision, vision_mask, positions)
    return self._lm_head(h, "text_encoder.cls.predictions.", "text_encoder.bert.embeddings.word_embeddings.weight")

  def similarity(self, image_feat, text_feat):
    return image_feat @ text_feat.t() / self.w("temp")

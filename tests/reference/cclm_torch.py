"""A PyTorch reference of the multilingual CrossViewLM (official `models/xvlm.py: XVLMPlusBase`,
`models/model_pretrain.py: CrossViewLM.forward_para_text`), written from the official code, for the
parity tests. float32, eval mode (no dropout), one process (the official all-gather is the identity).

It takes an official-key state dict (docs/reference.md §7.2, CCLM layout): `text_encoder.*` (XLM-R,
evaluated by HF transformers' XLMRobertaModel), `cross_encoder.*` (BERT layers with cross-attention,
evaluated functionally by X2VLMReference.layers), `mlm_head.predictions.*`, text_proj, itm_head, temp.
The one substitution: `get_hard_negatives` draws with torch.multinomial; here the drawn indices are
arguments, so the test can feed the ones our sampler drew.
"""

import torch
import torch.nn.functional as F

from reference.x2vlm_torch import X2VLMReference


class CCLMReference:
  def __init__(self, sd, hf_config, *, cross_heads: int, num_cross: int, cross_eps: float = 1e-12):
    from transformers import XLMRobertaModel

    self.sd = {k: torch.as_tensor(v) for k, v in sd.items()}
    self.text_encoder = XLMRobertaModel(hf_config, add_pooling_layer=False).eval()
    text_sd = {k[len("text_encoder.") :]: v for k, v in self.sd.items() if k.startswith("text_encoder.")}
    missing, unexpected = self.text_encoder.load_state_dict(text_sd, strict=False)
    assert all("position_ids" in k for k in list(missing) + list(unexpected)), (missing, unexpected)
    self.lm_eps = hf_config.layer_norm_eps
    self.cross = X2VLMReference(
      sd, vision_heads=1, text_heads=cross_heads, fusion_start=0, num_layers=num_cross, text_eps=cross_eps
    )
    self.num_cross = num_cross

  # --- XVLMPlusBase ----------------------------------------------------------------------------
  def get_text_embeds(self, ids, atts):
    with torch.no_grad():
      return self.text_encoder(input_ids=ids, attention_mask=atts).last_hidden_state

  def get_cross_embeds(self, image_embeds, image_atts, text_embeds, text_atts):
    return self.cross.layers(
      text_embeds, text_atts, 0, self.num_cross, image_embeds, image_atts, prefix="cross_encoder.", cross_from=0
    )

  def get_features(self, text_embeds):
    return F.normalize(self.cross.linear(text_embeds[:, 0], "text_proj"), dim=-1)

  def mlm_head(self, h):
    c = "mlm_head.predictions."
    h = F.layer_norm(
      F.gelu(self.cross.linear(h, c + "transform.dense")),
      h.shape[-1:],
      self.sd[c + "transform.LayerNorm.weight"],
      self.sd[c + "transform.LayerNorm.bias"],
      self.lm_eps,
    )
    return F.linear(h, self.sd[c + "decoder.weight"], self.sd[c + "bias"])

  def get_contrastive_loss(self, image_feat, text_feat):
    logits = image_feat @ text_feat.t() / self.sd["temp"]
    labels = torch.arange(image_feat.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

  def get_matching_loss(self, image_embeds, image_atts, text_embeds, text_atts, image_neg_idx, text_neg_idx):
    bs = image_embeds.shape[0]
    image_embeds_neg = torch.stack([image_embeds[i] for i in image_neg_idx])
    image_atts_neg = torch.stack([image_atts[i] for i in image_neg_idx])
    text_embeds_neg = torch.stack([text_embeds[i] for i in text_neg_idx])
    text_atts_neg = torch.stack([text_atts[i] for i in text_neg_idx])
    text_embeds_all = torch.cat([text_embeds, text_embeds_neg], dim=0)
    text_atts_all = torch.cat([text_atts, text_atts_neg], dim=0)
    image_embeds_all = torch.cat([image_embeds_neg, image_embeds], dim=0)
    image_atts_all = torch.cat([image_atts_neg, image_atts], dim=0)
    cross_pos = self.get_cross_embeds(image_embeds, image_atts, text_embeds, text_atts)[:, 0, :]
    cross_neg = self.get_cross_embeds(image_embeds_all, image_atts_all, text_embeds_all, text_atts_all)[:, 0, :]
    output = self.cross.mlp(torch.cat([cross_pos, cross_neg], dim=0), "itm_head")
    labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)])
    return F.cross_entropy(output, labels)

  def get_mlm_loss(self, text_ids_masked, text_atts, image_embeds, image_atts, masked_pos, masked_ids):
    sequence_output = self.get_cross_embeds(
      image_embeds, image_atts, self.get_text_embeds(text_ids_masked, text_atts), text_atts
    )
    sequence_output = torch.gather(sequence_output, 1, masked_pos.unsqueeze(2).expand(-1, -1, sequence_output.size(-1)))
    scores = self.mlm_head(sequence_output)
    return F.cross_entropy(scores.view(-1, scores.shape[-1]), masked_ids.view(-1), ignore_index=-100)

  # --- CrossViewLM -----------------------------------------------------------------------------
  def forward_para_text(
    self, text_ids, text_atts, text_ids_masked, masked_pos, masked_ids, text_ids_2, text_atts_2, neg_1, neg_2
  ):
    """neg_1[b]: row of sentence 1 (the "image") paired with sentence 2 of row b as a negative;
    neg_2[b]: row of sentence 2 (the "text") paired with sentence 1 of row b."""
    text_embeds = self.get_text_embeds(text_ids, text_atts)
    text_embeds_2 = self.get_text_embeds(text_ids_2, text_atts_2)
    text_feat = self.get_features(text_embeds)
    text_feat_2 = self.get_features(text_embeds_2)
    loss_ttc = self.get_contrastive_loss(text_feat, text_feat_2)
    loss_ttm = self.get_matching_loss(text_embeds, text_atts, text_embeds_2, text_atts_2, neg_1, neg_2)
    loss_mlm = self.get_mlm_loss(text_ids_masked, text_atts, text_embeds_2, text_atts_2, masked_pos, masked_ids)
    return {"loss_ttc": loss_ttc, "loss_ttm": loss_ttm, "loss_mlm": loss_mlm}

"""Pre-training (docs/reference.md §2–§3): three streams per step under ITC, ITM with hard negatives, MLM
and box losses. Its data are the three streams (`tools/build_tfds.py --kind image_text|region|video`,
x2vlm_jax.data.pipeline); its own evaluation is zero-shot retrieval (the `retrieval` evaluator)."""

import jax

from x2vlm_jax import objectives
from x2vlm_jax import sharding as shd
from x2vlm_jax.batch import PICTURE_STREAMS as STREAMS
from x2vlm_jax.tasks.base import Task


def enabled_streams(data_cfg):
  return [
    s
    for s in STREAMS
    if s in data_cfg
    and data_cfg[s].get("enabled", True)
    and data_cfg[s].get("batch_size", 0) > 0
    and len(data_cfg[s].get("datasets", ())) > 0
  ]


class PretrainTask(Task):
  name = "pretrain"
  EVALUATION = ("retrieval", {})

  def __init__(self, config):
    super().__init__(config)
    self.weights = dict(config.loss_weights)
    self.group_sizes = dict(config.itm_group_size)
    self.itc_grad_scale = float(config.itc_grad_scale)
    self.stop_calc_itm = int(config.stop_calc_itm)

  def loss(self, model, batch, rng, step):
    # Official behaviour after `stop_calc_itm` (docs/reference.md §3.6): L_itm is a constant 0; the fusion of the
    # 3B ITM pairs is skipped (lax.cond) rather than computed and discarded.
    itm_on = (step < self.stop_calc_itm) if self.stop_calc_itm >= 0 else True
    r_vision, rng = jax.random.split(rng)
    tokens = objectives.vision_passes(model, batch, r_vision)
    per_stream = {}
    for i, (stream, fields) in enumerate(sorted(batch.items())):
      rows = int(fields["text_ids"].shape[0])
      per_stream[stream] = objectives.stream_losses(
        model,
        stream,
        fields,
        jax.random.fold_in(rng, i),
        group_size=min(int(self.group_sizes.get(stream, rows)), rows),
        itc_grad_scale=self.itc_grad_scale,
        itm_on=itm_on,
        vision_tokens=tokens[stream],
      )
    metrics = {f"{stream}/{k}": v for stream, terms in per_stream.items() for k, v in terms.items()}
    return objectives.total_loss(per_stream, self.weights), metrics

  def train_iterator(self, seed, process_index, process_count):
    data = self.config.data
    if data.get("source", "tfds") == "synthetic":
      from x2vlm_jax.tasks.synthetic import SyntheticIterator

      return SyntheticIterator(
        data, self.config.model, seed=seed, process_index=process_index, process_count=process_count
      )
    from x2vlm_jax.data import pipeline  # tensorflow lives only behind this import

    return pipeline.create_train_iterator(data, seed=seed, process_index=process_index, process_count=process_count)

  def global_batch(self, mesh, host_batch):
    if "region" in host_batch and jax.process_count() > 1:
      # `image_index` is host-local in the batch contract; offset it to this host's block of images.
      region = dict(host_batch["region"])
      region["image_index"] = region["image_index"] + jax.process_index() * region["images"].shape[0]
      host_batch = {**host_batch, "region": region}
    return shd.global_batch(mesh, host_batch)

  def batch_spec(self):
    from x2vlm_jax.tasks.synthetic import SyntheticIterator  # the contract's shapes, no data

    return SyntheticIterator(self.config.data, self.config.model, seed=0, process_count=1).specs

  def examples_per_step(self) -> int:
    return sum(int(self.config.data[s].batch_size) for s in enabled_streams(self.config.data))

"""VQA v2 with the generative answer decoder, large model (docs/reference.md §5.2).

Released X²-VLM config `configs/finetune/vqa2_large.yaml` [x2vlm]: as vqa2_base (768 px, 6 decoder
layers, large_lr_for_dec, lr 4e-5, vision_lr 2e-5, wd 0.01, 5 epochs, k_test 128) except 2 per GPU ×
32 A100 × 2 accumulation steps (global 128 per optimizer step), text_lr 2e-5 and 5% warm-up. Our
choice: rematerialised vision blocks (768 px, 2304 patches × 24 layers).
"""

from x2vlm_jax.configs.finetune import vqa2_base


def get_config(arg=None):
  c = vqa2_base.get_config("model=large,gpus=32,per_gpu=2,accum=2" + (f",{arg}" if arg else ""))
  c.optim.text_lr = 2e-5
  c.optim.warmup_fraction = 0.05
  c.model.remat_vision = True
  return c

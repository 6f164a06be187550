"""Task metrics of the fine-tuning benchmarks, host-side and framework-free.

  caption_metrics   COCO captioning: BLEU-1..4, METEOR (when Java is present), ROUGE-L, CIDEr-D (spec §5.5)
  vqa_metrics       VQA v2 accuracy with the official answer normalisation (spec §5.2)
"""

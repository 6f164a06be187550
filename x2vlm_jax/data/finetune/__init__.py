"""Fine-tuning datasets, one module per task (official annotation JSON → TFDS → tf.data stream).

common     records into counted skips, media stored once with a row table, the single-stream iterator
retrieval  COCO / Flickr30K retrieval (docs/reference.md §4.2, §5.1)
nlvr2      NLVR2 image-pair statements (docs/reference.md §4.2, §5.3)
grounding  RefCOCO+ referring expressions with their boxes (docs/reference.md §4.2, §5.4)
vqa        VQA v2 + VG QA (docs/reference.md §4.2, §5.2)
captioning COCO Karpathy captioning (docs/reference.md §4.2, §5.5)
video      MSRVTT-QA / MSVD-QA and MSRVTT video–text retrieval (docs/reference.md §5.6, §2.4)

Each module has build(annotations, image_root, data_dir, name, *, split, strict, max_words, **options)
(video: build_qa, build_retrieval), create_iterator(cfg, *, spec, seed, process_index, process_count)
and train_size(cfg). The task that reads a module names it and its builder (x2vlm_jax.tasks: what
`tools/build_tfds.py --kind <task>` builds) and hands it its batch contract (`spec`).
"""

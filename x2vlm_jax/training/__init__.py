"""Training, the engine: the loop (`trainer`), the step (`train_step`), the state (`train_state`),
checkpoints, the optimizer, `init_from` and metrics. The task maths live in `x2vlm_jax.objectives`.

Deliberately empty of imports: `import x2vlm_jax.training.optimizer` must not pull in the trainer, the
data pipeline or checkpointing (tests and tools import single submodules).
"""

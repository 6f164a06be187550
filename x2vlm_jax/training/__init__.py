"""Training: loss math (`losses`), optimizer (`optimizer`) and the trainer.

Deliberately empty of imports: `import x2vlm_jax.training.losses` must not pull in the trainer, the
data pipeline or checkpointing (tests and tools import single submodules).
"""

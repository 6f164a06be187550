"""`python -m x2vlm_jax.cli COMMAND [args...]` (x2vlm_jax/cli/__init__.py)."""

from x2vlm_jax import cli

cli.main()

"""Entry point in a clone: python main.py --config=configs/{pretrain,finetune}/NAME.py[:arg]
[--config.key=value ...] --workdir=DIR, the same as the `x2vlm-train` console script (the code, usage
and flags: x2vlm_jax/cli/train.py; `--help`)."""

if __name__ == "__main__":
  from x2vlm_jax import cli

  cli.launch("train")

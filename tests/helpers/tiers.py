"""The two test tiers (docs/testing.md): a parametrised test keeps the cases named `fast` in
`make test-fast`; its other cases run in `make test` only (`slow`)."""

import pytest


def tiered(values, fast):
  """`values` as pytest params, each not in `fast` marked slow (ids unchanged)."""
  fast = set(fast)
  missing = fast - set(values)
  assert not missing, f"fast cases {sorted(missing)} are not among {list(values)}"
  return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in values]

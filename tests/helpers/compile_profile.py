"""An opt-in pytest plugin: per test, the seconds JAX spent in-process tracing, lowering and compiling,
and the programs it compiled (docs/testing.md, "Where the time goes").

  .venv/bin/python -m pytest -q -n 2 -p tests.helpers.compile_profile tests
  # → one JSON line per test that compiled anything, in $COMPILE_PROFILE_OUT (default compile_profile.jsonl)

Programs compiled by subprocesses (`main.py`, tools) are not seen: their tests show as wall time only.
"""

import json
import os

import pytest

_EVENTS = {
  "/jax/core/compile/jaxpr_trace_duration": "trace_s",
  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
  "/jax/core/compile/backend_compile_duration": "compile_s",
}
_current = {"test": None}
_per_test = {}


def _listener(event, duration, **kwargs):
  key = _EVENTS.get(event)
  if key is None:
    return
  record = _per_test.setdefault(_current["test"] or "<outside a test>", {"programs": []})
  record[key] = record.get(key, 0.0) + duration
  if key == "compile_s":
    record["programs"].append([kwargs.get("fun_name"), round(duration, 2)])


def pytest_configure(config):
  import jax.monitoring

  jax.monitoring.register_event_duration_secs_listener(_listener)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  _current["test"] = item.nodeid
  yield
  _current["test"] = None
  record = _per_test.pop(item.nodeid, None)
  if record:
    out = os.environ.get("COMPILE_PROFILE_OUT", "compile_profile.jsonl")
    with open(out, "a") as f:  # a local file: the profile is a developer's, never a gs:// path
      f.write(json.dumps({"test": item.nodeid, **record}) + "\n")

"""tools/build_tfds.py: exact written/skipped counts by reason, nothing valid lost, --strict."""

import base64
import json

import numpy as np
import pytest

from tests.helpers.tools import load_tool

pytest.importorskip("tensorflow")

from x2vlm_jax.data import records, shapes  # noqa: E402


@pytest.fixture(scope="module")
def build_tfds():
  return load_tool("build_tfds")


def _jpeg(seed):
  img, _, _ = shapes.render_scene(np.random.RandomState(seed))
  return shapes.encode(img)


def _b64(data):
  return base64.b64encode(data).decode()


def _write(path, lines):
  with open(path, "w") as f:
    for x in lines:
      f.write((x if isinstance(x, str) else json.dumps(x)) + "\n")


def test_image_text_counts(build_tfds, tmp_path, capsys):
  good = [{"binary": _b64(_jpeg(i)), "desc": f"a photo number {i}"} for i in range(6)]
  good[1]["desc"] = ["first alt", "second alt"]
  bad = {
    "corrupt_image": [
      {"binary": _b64(b"garbage bytes"), "desc": "x"},
      {"binary": _b64(_jpeg(9)[:200]), "desc": "truncated jpeg"},
    ],
    "bad_base64": [{"binary": _b64(_jpeg(8))[:-3], "desc": "cut base64"}],
    "empty_caption": [
      {"binary": _b64(_jpeg(7)), "desc": ""},
      {"binary": _b64(_jpeg(7))},
      {"binary": _b64(_jpeg(7)), "desc": " ... !"},
    ],
    "bad_field_type": [{"binary": _b64(_jpeg(7)), "desc": 5}, {"binary": 12, "desc": "int image"}],
    "missing_image": [{"desc": "no image"}],
    "bad_json": ["{not json", "[1, 2]"],
  }
  lines = good[:3] + [r for rs in bad.values() for r in rs] + good[3:]
  _write(tmp_path / "a.jsonl", lines[:8])
  _write(tmp_path / "b.jsonl", lines[8:])
  assert (
    build_tfds.main(
      [
        "--kind",
        "image_text",
        "--input",
        str(tmp_path / "*.jsonl"),
        "--data_dir",
        str(tmp_path / "out"),
        "--name",
        "itxt",
        "--caption_key",
        "desc",
      ]
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  assert "written: 6" in out and f"skipped: {sum(len(v) for v in bad.values())}" in out
  for reason, rs in bad.items():
    assert f"skipped[{reason}]: {len(rs)}" in out
  src = records.open_source(str(tmp_path / "out"), "itxt", "train")
  assert len(src) == 6
  caps = sorted(src[i]["caption"].decode() for i in range(6))
  assert caps == sorted([f"a photo number {i}" for i in (0, 2, 3, 4, 5)] + ["first alt\x1fsecond alt"])
  assert all(src[i]["image"] in {_jpeg(j) for j in range(6)} for i in range(6))


def test_region_counts_and_box_drops(build_tfds, tmp_path, capsys):
  """Boxes are stored as the official reader sees them: int() of each value (toward zero), never
  clipped; a record with no element that can be the crop anchor is never used officially → skipped."""
  img = _b64(_jpeg(1))  # 128×128
  recs = [
    {
      "binary": img,
      "caption": "whole image",
      "elems": [
        {"caption": "red circle", "bb": [10.7, 10.2, 20.9, 19.99], "attributes": ["small", "round"]},
        {"caption": ["blue square", "square"], "bb": [120, 100, 20, 40]},  # partly outside: as is
        {"caption": "off", "bb": [200, 200, 10, 10]},  # outside: as is
        {"caption": "edge", "bb": [-0.9, 3.5, 5.5, 4.0]},
      ],
    },  # int(-0.9) = 0
    {"binary": img, "caption": "only caption"},  # no element
    {
      "binary": img,
      "caption": "no anchor",
      "elems": [{"caption": "flat", "bb": [5, 5, 0.9, 4]}, {"caption": "out", "bb": [100, 0, 28.5, 129]}],
    },
    {"binary": img, "elems": [{"caption": "x", "bb": [1, 2, 3]}, {"caption": "", "bb": [1, 1, 5, 5]}]},
    {
      "binary": img,
      "elems": [
        {"caption": "lonely box", "bb": [0, 0, 128, 128]},
        {"caption": "y", "bb": "1,2,3,4"},
        {"caption": "", "bb": [1, 1, 5, 5]},
        {"caption": "huge", "bb": [1e30, 0, 5, 5]},
      ],
    },
    {"binary": _b64(b"\xff\xd8\xff broken"), "caption": "corrupt"},
    {"binary": img, "elems": "not a list"},
  ]
  _write(tmp_path / "r.jsonl", recs)
  assert (
    build_tfds.main(
      ["--kind", "region", "--input", str(tmp_path / "r.jsonl"), "--data_dir", str(tmp_path / "out"), "--name", "reg"]
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  for line in (
    "written: 2",
    "skipped: 5",
    "skipped[no_valid_anchor]: 3",
    "skipped[corrupt_image]: 1",
    "skipped[bad_field_type]: 1",
    "boxes_dropped: 3",
    "boxes_dropped[box_bad_type]: 2",
    "boxes_dropped[box_empty_caption]: 1",
    "boxes_not_anchor: 2",
  ):
    assert line in out, (line, out)
  src = records.open_source(str(tmp_path / "out"), "reg", "train")
  r0 = src[0]
  np.testing.assert_array_equal(r0["boxes"], [[10, 10, 20, 19], [120, 100, 20, 40], [200, 200, 10, 10], [0, 3, 5, 4]])
  assert r0["elem_attrs"][0].decode() == "small\x1fround" and r0["elem_attrs"][1].decode() == ""
  np.testing.assert_array_equal(src[1]["boxes"], [[0, 0, 128, 128]])
  assert src[1]["caption"].decode() == ""


def test_video_and_strict(build_tfds, tmp_path, capsys):
  f = [_b64(_jpeg(i)) for i in range(4)]
  recs = [
    {"video_frames": f[:3], "text": "a clip"},
    {"video_frames": [f[:2], f[2:], f[:1]], "text": ["first", "[Music]", "third"]},
    {"video_frames": [f[0], _b64(b"nope")], "text": "bad frame"},
  ]
  _write(tmp_path / "v.jsonl", recs)
  assert (
    build_tfds.main(
      ["--kind", "video", "--input", str(tmp_path / "v.jsonl"), "--data_dir", str(tmp_path / "out"), "--name", "vid"]
    )
    == 0
  )
  out = capsys.readouterr().out.splitlines()
  assert "written: 3" in out and "skipped: 1" in out and "skipped[corrupt_image]: 1" in out
  src = records.open_source(str(tmp_path / "out"), "vid", "train")
  assert [len(src[i]["frames"]) for i in range(3)] == [3, 2, 1]
  # --strict stops at the first bad record, naming file and record number
  with pytest.raises(ValueError, match=r"v\.jsonl: record 3: corrupt_image"):
    build_tfds.build("video", str(tmp_path / "v.jsonl"), str(tmp_path / "out2"), "vid", strict=True)
  assert (
    build_tfds.main(
      [
        "--kind",
        "video",
        "--input",
        str(tmp_path / "v.jsonl"),
        "--data_dir",
        str(tmp_path / "out3"),
        "--name",
        "vid",
        "--strict",
      ]
    )
    == 1
  )
  assert "record 3" in capsys.readouterr().err

"""The retrieval evaluator against independent references of the official protocol (docs/reference.md §5.1):

* k ≥ N: equals a brute-force computation (every image–text pair fused, official rank code);
* k < N: equals an independent implementation of top-k by ITC + −100 fill + official ranks;
* sharded over 4 devices and over 2 processes it equals one device;
* bad input: a record without a field is a clear error, an image that does not decode a counted skip.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from tests.helpers import xla
from x2vlm_jax import inference, params_io, tasks
from x2vlm_jax import sharding as shd
from x2vlm_jax.data.config import SHAPES_VOCAB
from x2vlm_jax.inference.images import normalize, read_image
from x2vlm_jax.inference.tokenizer import Tokenizer
from x2vlm_jax.models import X2VLM, get_preset

REPO = pathlib.Path(__file__).resolve().parents[1]
WORDS = ["red", "blue", "green", "circle", "square", "triangle", "small", "large", "left", "above", "two", "yellow"]
N_IMAGES, MAX_TOKENS = 14, 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  d = tmp_path_factory.mktemp("retrieval")
  rs = np.random.RandomState(0)
  records = []
  for i in range(N_IMAGES):
    Image.fromarray(rs.randint(0, 255, (30 + i, 44, 3), np.uint8)).save(d / f"im{i}.jpg")
    caps = [" ".join(rs.choice(WORDS, size=rs.randint(2, 6))) + f" {WORDS[i % 12]}" for _ in range(1 + i % 3)]
    records.append({"image": f"im{i}.jpg", "caption": caps if len(caps) > 1 else caps[0]})
  (d / "test.json").write_text(json.dumps(records))
  return d, records


@pytest.fixture(scope="module")
def model():
  cfg = get_preset("tiny")
  params = nnx.to_pure_dict(nnx.state(X2VLM(cfg, rngs=nnx.Rngs(3)), nnx.Param))
  # Amplify the ITM head so that the rerank scores of different pairs are far apart (a random tiny
  # model gives logits equal to ~1e-4, and rank ties would make the comparison meaningless).
  params["itm_head"]["fc1"]["kernel"] = params["itm_head"]["fc1"]["kernel"] * 300.0
  return cfg, params


def _config(cfg, d, **eval_fields):
  c = ml_collections.ConfigDict()
  c.model = cfg
  c.data = ml_collections.ConfigDict({"vocab_file": SHAPES_VOCAB})
  e = dict(
    type="retrieval",
    annotations=str(d / "test.json"),
    image_root=str(d),
    batch_size=3,
    rerank_pairs=8,
    max_tokens=MAX_TOKENS,
  )
  e.update(eval_fields)
  return c, ml_collections.ConfigDict(e)


def _run(cfg, params, d, devices, **eval_fields):
  c, e = _config(cfg, d, **eval_fields)
  mesh = shd.create_mesh((len(devices), 1, 1), devices=devices)
  graphdef = nnx.graphdef(X2VLM(cfg, rngs=nnx.Rngs(0)))
  with jax.set_mesh(mesh):
    return tasks.build_evaluator("test", c, e, mesh)(graphdef, params)


# ------------------------------------------------------------------------ independent references


def _official_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
  """The official `itm_eval` (X2-VLM Retrieval.py), written out independently."""
  ranks = np.zeros(scores_i2t.shape[0])
  for index, score in enumerate(scores_i2t):
    inds = np.argsort(score)[::-1]
    ranks[index] = min(np.where(inds == i)[0][0] for i in img2txt[index])
  tr = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
  ranks = np.zeros(scores_t2i.shape[0])
  for index, score in enumerate(scores_t2i):
    inds = np.argsort(score)[::-1]
    ranks[index] = np.where(inds == txt2img[index])[0][0]
  ir = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
  out = {
    "txt_r1": tr[0],
    "txt_r5": tr[1],
    "txt_r10": tr[2],
    "txt_r_mean": np.mean(tr),
    "img_r1": ir[0],
    "img_r5": ir[1],
    "img_r10": ir[2],
    "img_r_mean": np.mean(ir),
  }
  out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
  return out


@pytest.fixture(scope="module")
def brute_force(dataset, model):
  """Every pair fused through the inference API (its own jitted functions, one pair row at a time)."""
  d, records = dataset
  cfg, params = model
  api = inference.from_params(cfg, params)
  texts, txt2img, img2txt = [], [], []
  for i, r in enumerate(records):
    caps = r["caption"] if isinstance(r["caption"], list) else [r["caption"]]
    img2txt.append(list(range(len(texts), len(texts) + len(caps))))
    texts += caps
    txt2img += [i] * len(caps)
  images = normalize(np.stack([read_image(str(d / r["image"]), cfg.image_res) for r in records]))
  ids, mask = Tokenizer(SHAPES_VOCAB, MAX_TOKENS)(texts, clean=30)
  img_embeds, img_feat = (np.asarray(x) for x in api.encode_image(images))
  txt_embeds, txt_feat = (np.asarray(x) for x in api.encode_text(ids, mask))
  itm = np.stack(
    [
      np.asarray(api.itm_logits(np.repeat(img_embeds[i : i + 1], len(texts), 0), None, txt_embeds, mask))[:, 1]
      for i in range(len(records))
    ]
  )
  gaps = np.diff(np.sort(itm, axis=1), axis=1)
  assert gaps.min() > 1e-4, "rerank scores too close for a meaningful rank comparison"
  return dict(sims=img_feat @ txt_feat.T, itm=itm, txt2img=np.asarray(txt2img), img2txt=img2txt)


def _fill(sims, itm, k):
  """Official score matrix: −100 everywhere except each row's top-k by ITC, which gets the ITM logit."""
  out = np.full(sims.shape, -100.0)
  for i in range(sims.shape[0]):
    top = np.argsort(-sims[i])[:k]
    out[i, top] = itm[i, top]
  return out


# ------------------------------------------------------------------------------------------- tests


def test_rerank_equals_every_pair_fused_when_k_covers_all(dataset, model, brute_force):
  cfg, params = model
  metrics, pred = _run(cfg, params, dataset[0], jax.devices()[:1], k_test=1000)
  b = brute_force
  want = _official_itm_eval(b["itm"], b["itm"].T, b["txt2img"], b["img2txt"])
  for k, v in want.items():
    assert metrics[k] == pytest.approx(v), k
  # The evaluator's scores are the fused ITM logits of the very pairs.
  first = pred["i2t"][0]
  np.testing.assert_allclose(first["scores"], b["itm"][0][first["texts"]], rtol=2e-6)
  assert metrics["num_images"] == N_IMAGES and metrics["num_texts"] == len(b["txt2img"])


def test_rerank_equals_topk_and_minus_100_fill_when_k_is_smaller(dataset, model, brute_force):
  cfg, params = model
  b = brute_force
  k = 10  # < 14 images and < the texts: both directions really cut
  metrics, _ = _run(cfg, params, dataset[0], jax.devices()[:1], k_test=k)
  want = _official_itm_eval(
    _fill(b["sims"], b["itm"], k), _fill(b["sims"].T, b["itm"].T, k), b["txt2img"], b["img2txt"]
  )
  for key, v in want.items():
    assert metrics[key] == pytest.approx(v), key
  full = _official_itm_eval(b["itm"], b["itm"].T, b["txt2img"], b["img2txt"])
  assert any(full[key] != want[key] for key in want), "k < N must change something for this test to bite"


def test_sharded_over_four_devices_equals_one_device(dataset, model):
  cfg, params = model
  one, pred1 = _run(cfg, params, dataset[0], jax.devices()[:1], k_test=10)
  four, pred4 = _run(cfg, params, dataset[0], jax.devices()[:4], k_test=10)
  assert _untimed(one) == pytest.approx(_untimed(four))
  for a, b in zip(pred1["t2i"], pred4["t2i"]):
    assert a["images"] == b["images"]
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)


def _untimed(metrics):
  return {k: v for k, v in metrics.items() if "seconds" not in k}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cli(ckpt, d, out, *extra, devices=1, env_extra=None):
  env = dict(os.environ, XLA_FLAGS=xla.cpu_flags(devices), JAX_PLATFORMS="cpu")
  env.update(env_extra or {})
  return [
    sys.executable,
    "tools/evaluate.py",
    "--task",
    "retrieval",
    "--checkpoint",
    str(ckpt),
    "--annotations",
    str(d / "test.json"),
    "--image_root",
    str(d),
    "--output",
    str(out),
    "--config.k_test=10",
    "--config.batch_size=3",
    "--config.rerank_pairs=8",
    f"--config.max_tokens={MAX_TOKENS}",
    *extra,
  ], env


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_equal_one_and_cli_bad_input(dataset, model, tmp_path):
  d, records = dataset
  cfg, params = model
  ckpt = tmp_path / "ckpt"
  params_io.save(str(ckpt), cfg, params, vocab_file=SHAPES_VOCAB)
  cmd, env = _cli(ckpt, d, tmp_path / "one")
  single = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  procs = []
  for i in range(2):
    cmd, env = _cli(
      ckpt,
      d,
      tmp_path / "two",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={i}",
      devices=2,
    )
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for p in procs:
    out, _ = p.communicate(timeout=400)
    assert p.returncode == 0, out[-3000:]
  a = json.loads((tmp_path / "one" / "metrics.json").read_text())
  b = json.loads((tmp_path / "two" / "metrics.json").read_text())
  assert _untimed(a) == pytest.approx(_untimed(b))
  assert (
    json.loads((tmp_path / "one" / "predictions.json").read_text())["i2t"][0]["texts"]
    == json.loads((tmp_path / "two" / "predictions.json").read_text())["i2t"][0]["texts"]
  )

  # Bad input through the CLI: an unknown task, a record without its caption.
  cmd, env = _cli(ckpt, d, tmp_path / "x")
  bad_task = subprocess.run(
    [c if c != "retrieval" else "retreival" for c in cmd],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert bad_task.returncode == 2 and "unknown task" in bad_task.stderr and "retrieval" in bad_task.stderr
  broken = [dict(r) for r in records]
  del broken[5]["caption"]
  (tmp_path / "broken.json").write_text(json.dumps(broken))
  cmd[cmd.index("--annotations") + 1] = str(tmp_path / "broken.json")
  missing = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2, missing.stderr[-2000:]
  assert "record 5 has no field 'caption'" in missing.stderr


def test_corrupt_image_is_a_counted_skip_or_a_strict_error(dataset, model, tmp_path):
  d, records = dataset
  cfg, params = model
  for name in ("test.json",) + tuple(r["image"] for r in records):
    (tmp_path / name).write_bytes((d / name).read_bytes())
  (tmp_path / "im4.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  metrics, pred = _run(cfg, params, tmp_path, jax.devices()[:1], k_test=1000)
  assert metrics["skipped_images"] == 1 and metrics["num_images"] == N_IMAGES - 1
  caps4 = records[4]["caption"]
  assert metrics["num_texts"] == sum(len(r["caption"]) if isinstance(r["caption"], list) else 1 for r in records) - (
    len(caps4) if isinstance(caps4, list) else 1
  )
  assert all(str(tmp_path / "im4.jpg") != p["image"] for p in pred["i2t"])
  assert all(4 not in p["images"] for p in pred["t2i"])  # never a candidate
  with pytest.raises(ValueError, match="im4.jpg.*does not decode"):
    _run(cfg, params, tmp_path, jax.devices()[:1], k_test=1000, strict=True)


def test_notebook_retrieval_api_reranks_the_itc_top_k(dataset, model, brute_force):
  from x2vlm_jax.inference import retrieval

  d, records = dataset
  cfg, params = model
  api = inference.from_params(cfg, params, vocab_file=SHAPES_VOCAB)
  texts = [c for r in records for c in (r["caption"] if isinstance(r["caption"], list) else [r["caption"]])]
  got = retrieval.rank(api, [str(d / r["image"]) for r in records], texts, k=5, max_tokens=MAX_TOKENS)
  b = brute_force
  np.testing.assert_allclose(got.similarity, b["sims"], atol=1e-5)
  for i in (0, 7):
    top = np.argsort(-b["sims"][i])[:5]
    want = top[np.argsort(-b["itm"][i][top])]
    assert [m.index for m in got.i2t[i]] == want.tolist()
    np.testing.assert_allclose([m.itm for m in got.i2t[i]], b["itm"][i][want], rtol=2e-6)
  t = 3
  top = np.argsort(-b["sims"][:, t])[:5]
  assert [m.index for m in got.t2i[t]] == top[np.argsort(-b["itm"][top, t])].tolist()


def test_retrieval_names_cosines_cosine_and_the_api_names_logits_itc_logits(dataset, model, brute_force):
  """`rank` reports cosines (`cosine`), the API's `itc_logits` those ÷ the temperature; both were called
  "itc"/"similarity". The old names stay as aliases of the new ones."""
  from x2vlm_jax.inference import retrieval

  d, records = dataset
  cfg, params = model
  api = inference.from_params(cfg, params, vocab_file=SHAPES_VOCAB)
  texts = [c for r in records for c in (r["caption"] if isinstance(r["caption"], list) else [r["caption"]])]
  got = retrieval.rank(api, [str(d / r["image"]) for r in records], texts, k=3, max_tokens=MAX_TOKENS)
  cosines = brute_force["sims"]
  assert np.abs(cosines).max() <= 1 + 1e-5  # unit-norm features: cosines, not logits
  np.testing.assert_allclose(got.cosine, cosines, atol=1e-5)
  assert got.similarity is got.cosine
  for m in got.i2t[0]:
    assert m.cosine == pytest.approx(cosines[0, m.index], abs=1e-5) and m.itc == m.cosine
  first = normalize(np.stack([read_image(str(d / records[0]["image"]), cfg.image_res)]))
  feats_i = np.asarray(api.encode_image(first)[1])
  ids, mask = Tokenizer(SHAPES_VOCAB, MAX_TOKENS)(texts, clean=30)
  feats_t = np.asarray(api.encode_text(ids, mask)[1])
  temp = float(np.asarray(params["temp"]))
  assert abs(temp - 1) > 0.5  # logits and cosines differ by far more than the tolerance
  logits = np.asarray(api.itc_logits(feats_i, feats_t))
  np.testing.assert_allclose(logits, cosines[:1] / temp, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(api.similarity(feats_i, feats_t)), logits)

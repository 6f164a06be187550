"""`shapes_ml`: the embedded `shapes` scenes described (captions) and asked about (questions) in several
languages (no download), for a tiny multilingual (CCLM) model on CPU.

A small hand-made lexicon turns a scene's objects (colour, shape, size, the relation of their centres:
all read from the pixels, x2vlm_jax/data/shapes.py) into the same caption in English, German and French,
with each language's grammar where it shows (German gender and case endings, French adjective order).
Written, in the official multilingual formats (docs/reference.md §4.1):
  shapes_ml        image–text + region records whose captions, element captions and attributes are
                   {lang: text} (one language drawn per use; region attributes code-switched)
  shapes_ml_mtext  parallel sentence pairs {source_text, target_text} (en–de, en–fr, de–fr) of scene
                   descriptions drawn from the same grammar, without images (the WikiMatrix stand-in)
The committed SentencePiece model `shapes_ml_spm.model` (XLM-R ids) covers every word the lexicon can
write; `tools/train_spm.py --shapes_ml` re-trains it deterministically from `corpus()`.
"""

import json
import os
from typing import Dict, Iterator, List, Sequence

import numpy as np

from x2vlm_jax import fs
from x2vlm_jax.data import shapes

NAME, MTEXT_NAME = "shapes_ml", "shapes_ml_mtext"
# The same scenes with English captions only: the image and region streams of the cross-lingual A/B
# (docs/multilingual_model.md), where German and French are seen in the parallel text alone.
EN_NAME = "shapes_ml_en"
LANGUAGES = ("en", "de", "fr")
SPM_MODEL = os.path.join(os.path.dirname(__file__), "shapes_ml_spm.model")

# German: gender of each noun (adjective endings after "ein"/"einem" follow it).
DE_SHAPES = {
  "circle": ("Kreis", "m"),
  "square": ("Quadrat", "n"),
  "triangle": ("Dreieck", "n"),
  "diamond": ("Raute", "f"),
}
DE_COLORS = {
  "red": "rot",
  "green": "grün",
  "blue": "blau",
  "yellow": "gelb",
  "purple": "lila",  # indeclinable in German
  "orange": "orange",  # declined as "orangen-" + ending ("ein orangener Kreis"), see _de_adj
  "cyan": "türkis",  # indeclinable in German
}
DE_SIZES = {"small": "klein", "large": "groß"}
DE_RELATIONS = {"left of": "links von", "right of": "rechts von", "above": "über", "below": "unter"}
FR_SHAPES = {"circle": "cercle", "square": "carré", "triangle": "triangle", "diamond": "losange"}  # all masculine
FR_COLORS = {
  "red": "rouge",
  "green": "vert",
  "blue": "bleu",
  "yellow": "jaune",
  "purple": "violet",
  "orange": "orange",
  "cyan": "cyan",
}
FR_SIZES = {"small": "petit", "large": "grand"}
FR_RELATIONS = {"left of": "à gauche d'", "right of": "à droite d'", "above": "au-dessus d'", "below": "en dessous d'"}
_INDECLINABLE = {"lila", "türkis"}
# German adjective endings: (article, case) → gender → ending, mixed declension after ein/einem/einer.
_DE_ARTICLE = {("nom", "m"): "ein", ("nom", "n"): "ein", ("nom", "f"): "eine"}
_DE_ARTICLE.update({("dat", "m"): "einem", ("dat", "n"): "einem", ("dat", "f"): "einer"})
_DE_ENDING = {("nom", "m"): "er", ("nom", "n"): "es", ("nom", "f"): "e"}
_DE_ENDING.update({("dat", "m"): "en", ("dat", "n"): "en", ("dat", "f"): "en"})
_DE_ARTICLE.update({("acc", "m"): "einen", ("acc", "n"): "ein", ("acc", "f"): "eine"})
_DE_ENDING.update({("acc", "m"): "en", ("acc", "n"): "es", ("acc", "f"): "e"})
_DE_DEFINITE = {"m": "der", "n": "das", "f": "die"}
# Without article (region texts "roter Kreis"): strong declension, nominative.
_DE_STRONG = {"m": "er", "n": "es", "f": "e"}


def _de_adj(word: str, ending: str) -> str:
  if word in _INDECLINABLE:
    return word
  if word == "orange":
    return "orangen" + ending  # "ein orangener Kreis"
  return word + ending


def phrase(o: Dict, lang: str, case: str = "nom") -> str:
  """ "a small red circle" in `lang` (German: nominative or dative)."""
  if lang == "en":
    return f"a {o['size']} {o['color']} {o['shape']}"
  if lang == "de":
    noun, g = DE_SHAPES[o["shape"]]
    e = _DE_ENDING[(case, g)]
    return f"{_DE_ARTICLE[(case, g)]} {_de_adj(DE_SIZES[o['size']], e)} {_de_adj(DE_COLORS[o['color']], e)} {noun}"
  if lang == "fr":
    return f"un {FR_SIZES[o['size']]} {FR_SHAPES[o['shape']]} {FR_COLORS[o['color']]}"
  raise ValueError(f"language {lang!r}: expected one of {LANGUAGES}")


def caption(objs: Sequence[Dict], lang: str) -> str:
  """The scene's caption (the structure of shapes.render_scene's English caption) in `lang`."""
  and_word = {"en": "and", "de": "und", "fr": "et"}[lang]
  text = phrase(objs[0], lang)
  if len(objs) >= 2:
    rel = shapes._relation(objs[0], objs[1])  # noqa: SLF001 — the relation the English caption uses
    if lang == "en":
      text = f"{text} {rel} {phrase(objs[1], lang)}"
    elif lang == "de":
      text = f"{text} {DE_RELATIONS[rel]} {phrase(objs[1], lang, 'dat')}"
    else:
      text = f"{text} {FR_RELATIONS[rel]}{phrase(objs[1], lang)}"
  if len(objs) == 3:
    text += f" {and_word} {phrase(objs[2], lang)}"
  return text


def element_caption(o: Dict, lang: str) -> str:
  """A region's text without its size ("red circle"; the size is the element's attribute)."""
  if lang == "en":
    return f"{o['color']} {o['shape']}"
  if lang == "de":
    noun, g = DE_SHAPES[o["shape"]]
    return f"{_de_adj(DE_COLORS[o['color']], _DE_STRONG[g])} {noun}"
  return f"{FR_SHAPES[o['shape']]} {FR_COLORS[o['color']]}"


def attribute(o: Dict, lang: str) -> str:
  return {"en": o["size"], "de": DE_SIZES[o["size"]], "fr": FR_SIZES[o["size"]]}[lang]


YES_NO = {"en": ("yes", "no"), "de": ("ja", "nein"), "fr": ("oui", "non")}


def color_word(color: str, lang: str) -> str:
  return {"en": color, "de": DE_COLORS.get(color), "fr": FR_COLORS.get(color)}[lang]


def questions(objs: Sequence[Dict], rs) -> List[Dict[str, Dict[str, str]]]:
  """The scene's questions, each {lang: (question, answer)} over LANGUAGES: the colour of a shape that
  occurs once ("welche farbe hat der kreis" → "rot") and whether a coloured shape is there (half of
  them absent; "y a-t-il un cercle rouge" → "non"). Answers are read from the pixels' objects."""
  out = []
  kinds = [o["shape"] for o in objs]
  unique = [o for o in objs if kinds.count(o["shape"]) == 1]
  if unique:
    o = unique[rs.randint(len(unique))]
    noun, g = DE_SHAPES[o["shape"]]
    out.append(
      {
        "en": (f"what color is the {o['shape']}", o["color"]),
        "de": (f"welche farbe hat {_DE_DEFINITE[g]} {noun}", DE_COLORS[o["color"]]),
        "fr": (f"de quelle couleur est le {FR_SHAPES[o['shape']]}", FR_COLORS[o["color"]]),
      }
    )
  if rs.rand() < 0.5:
    o, present = objs[rs.randint(len(objs))], True
  else:
    here = {(x["color"], x["shape"]) for x in objs}
    absent = [(c, sh) for c in shapes.COLORS for sh in shapes.SHAPES if (c, sh) not in here]
    c, sh = absent[rs.randint(len(absent))]
    o, present = dict(color=c, shape=sh, size="small"), False
  noun, g = DE_SHAPES[o["shape"]]
  e = _DE_ENDING[("acc", g)]
  de_obj = f"{_DE_ARTICLE[('acc', g)]} {_de_adj(DE_COLORS[o['color']], e)} {noun}"
  out.append(
    {
      lang: (q, YES_NO[lang][0 if present else 1])
      for lang, q in (
        ("en", f"is there a {o['color']} {o['shape']}"),
        ("de", f"gibt es {de_obj}"),
        ("fr", f"y a-t-il un {FR_SHAPES[o['shape']]} {FR_COLORS[o['color']]}"),
      )
    }
  )
  return out


def random_objects(rs, k: int) -> List[Dict]:
  """k objects with distinct colours and centres placed so that any relation can occur (no image)."""
  colors = rs.choice(list(shapes.COLORS), size=k, replace=False)
  return [
    dict(
      color=str(c),
      shape=str(rs.choice(shapes.SHAPES)),
      size=str(rs.choice(list(shapes.SIZES))),
      cx=float(rs.uniform(0, 128)),
      cy=float(rs.uniform(0, 128)),
    )
    for c in colors
  ]


def corpus(n: int = 3000, seed: int = 0) -> List[str]:
  """Every form the lexicon writes (each phrase shape, relation, attribute) over random scenes: the
  SentencePiece training text."""
  rs = np.random.RandomState(seed)
  out = []
  for i in range(n):
    objs = random_objects(rs, 1 + i % 3)
    for lang in LANGUAGES:
      out.append(caption(objs, lang))
      out += [f"{attribute(o, lang)} {element_caption(o, lang)}" for o in objs]
    for q in questions(objs, rs):
      out += [f"{text} {answer}" for text, answer in q.values()]
  return out


def _image_examples(seed, n, languages: Sequence[str] = LANGUAGES) -> Iterator[Dict]:
  from x2vlm_jax.data import records  # tensorflow-datasets: only when writing

  rs = np.random.RandomState(seed)
  for _ in range(n):
    img, objs, _ = shapes.render_scene(rs)
    caps = [caption(objs, lang) for lang in languages]
    elems = [
      (o["box"], [element_caption(o, lang) for lang in languages], [attribute(o, lang) for lang in languages])
      for o in objs
    ]
    yield records.image_example(shapes.encode(img), shapes.SIZE, shapes.SIZE, caption=caps, elems=elems)


def _write_scenes(data_dir: str, name: str, languages: Sequence[str], num_train: int, num_test: int, seed: int):
  """The image_text + region records of `shapes_ml` and `shapes_ml_en`: one seed stream per split
  ([seed, 20] / [seed, 21], disjoint from `shapes`' [seed, 0..3] and the task files'), so every
  language selection holds the same scenes."""
  from x2vlm_jax.data import records  # tensorflow-datasets: only when writing

  w = records.DatasetWriter(data_dir, name, "image_text")
  w.write_split("train", _image_examples([seed, 20], num_train, languages), num_train, "scenes")
  w.write_split("test", _image_examples([seed, 21], num_test, languages), num_test, "scenes")
  w.finish()


def parallel_pairs(seed, n: int) -> Iterator[Dict]:
  """{source_text, target_text} pairs over the three language pairs, in turn."""
  rs = np.random.RandomState(seed)
  pairs = [("en", "de"), ("en", "fr"), ("de", "fr")]
  for i in range(n):
    objs = random_objects(rs, 1 + int(rs.randint(3)))
    a, b = pairs[i % len(pairs)]
    yield {"source_text": caption(objs, a), "target_text": caption(objs, b)}


def build(data_dir: str, num_train: int = 4000, num_test: int = 300, num_pairs: int = 8000, seed: int = 0) -> Dict:
  """Writes `shapes_ml` (image_text + region records, captions in every language) and `shapes_ml_mtext`
  (parallel text) under data_dir; reused when built with the same arguments."""
  params = dict(num_train=num_train, num_test=num_test, num_pairs=num_pairs, seed=seed, languages=list(LANGUAGES))
  marker = fs.path(data_dir) / NAME / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return {"image": NAME, "mtext": MTEXT_NAME, "vocab_file": SPM_MODEL}
  from x2vlm_jax.data import jsonl, records

  _write_scenes(data_dir, NAME, LANGUAGES, num_train, num_test, seed)
  w = records.DatasetWriter(data_dir, MTEXT_NAME, "mtext")
  conv = (jsonl.convert_mtext(p, max_words=64)[0] for p in parallel_pairs([seed, 22], num_pairs))
  w.write_split("train", conv, num_pairs, "pairs")
  w.finish()
  marker.write_text(json.dumps(params))
  return {"image": NAME, "mtext": MTEXT_NAME, "vocab_file": SPM_MODEL}


def build_english_only(data_dir: str, num_train: int = 4000, num_test: int = 300, seed: int = 0) -> str:
  """Writes `shapes_ml_en`: `build`'s scenes (the same seeds, so the same images) with their English
  captions, element captions and attributes only; reused when built with the same arguments."""
  params = dict(num_train=num_train, num_test=num_test, seed=seed, languages=["en"])
  marker = fs.path(data_dir) / EN_NAME / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return EN_NAME
  _write_scenes(data_dir, EN_NAME, ["en"], num_train, num_test, seed)
  marker.write_text(json.dumps(params))
  return EN_NAME


# ---------------------------------------------------------------- multilingual fine-tuning files

TASKS_NAME = "shapes_ml_tasks"
TASKS_VERSION = 2  # 2: the multilingual questions


def scene_captions(objs: Sequence[Dict], lang: str) -> List[str]:
  """Two captions of a scene in `lang`: the objects in their order and, with two or more, the first two
  swapped (the relation seen from the other object), as COCO images have several captions."""
  out = [caption(objs, lang)]
  if len(objs) >= 2:
    out.append(caption([objs[1], objs[0], *objs[2:]], lang))
  return out


def write_tasks(data_dir: str, num_train: int = 600, num_test: int = 200, seed: int = 0) -> str:
  """The multilingual retrieval files in the official retrieval format (docs/reference.md §4.2), one per
  language, on held-out scenes (their own seed streams):
      DATA_DIR/shapes_ml_tasks/images/{train,test}_NNNNN.jpg
      DATA_DIR/shapes_ml_tasks/retrieval_train_{lang}.json   [{"image", "caption", "image_id"}, ...]
      DATA_DIR/shapes_ml_tasks/retrieval_test_{lang}.json    [{"image", "caption": [...]}, ...]
      DATA_DIR/shapes_ml_tasks/vqa_{train,test}_{lang}.json  [{"question_id", "image", "question", "answer"}]
      DATA_DIR/shapes_ml_tasks/answer_list.json              every answer of every language
  Zero-shot cross-lingual transfer trains on `_en` and tests on every language; translate-train trains
  on all of them (the translations here are exact)."""
  out = fs.path(data_dir) / TASKS_NAME
  params = dict(num_train=num_train, num_test=num_test, seed=seed, version=TASKS_VERSION)
  marker = out / "build_params.json"
  if marker.exists() and json.loads(marker.read_text()) == params:
    return str(out)
  (out / "images").mkdir(parents=True, exist_ok=True)
  for split, n, stream in (("train", num_train, 30), ("test", num_test, 31)):
    rs = np.random.RandomState([seed, stream])
    rs_q = np.random.RandomState([seed, stream, 1])
    rows = {lang: [] for lang in LANGUAGES}
    qa = {lang: [] for lang in LANGUAGES}
    for i in range(n):
      img, objs, _ = shapes.render_scene(rs)
      for k, q in enumerate(questions(objs, rs_q)):
        for lang, (text, answer) in q.items():
          qa[lang].append(
            {"question_id": 10 * i + k, "image": f"images/{split}_{i:05d}.jpg", "question": text, "answer": answer}
          )
      name = f"images/{split}_{i:05d}.jpg"
      (out / name).write_bytes(shapes.encode(img))
      for lang in LANGUAGES:
        caps = scene_captions(objs, lang)
        if split == "train":
          rows[lang] += [{"image": name, "caption": c, "image_id": i} for c in caps]
        else:
          rows[lang].append({"image": name, "caption": caps})
    for lang in LANGUAGES:
      (out / f"retrieval_{split}_{lang}.json").write_text(json.dumps(rows[lang], ensure_ascii=False))
      (out / f"vqa_{split}_{lang}.json").write_text(json.dumps(qa[lang], ensure_ascii=False))
  answers = sorted({a for lang in LANGUAGES for a in [*YES_NO[lang], *(color_word(c, lang) for c in shapes.COLORS)]})
  (out / "answer_list.json").write_text(json.dumps(answers, ensure_ascii=False))
  marker.write_text(json.dumps(params))
  return str(out)

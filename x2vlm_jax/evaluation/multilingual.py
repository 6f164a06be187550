"""Per-language results and the official averages of the multilingual benchmarks (docs/multilingual.md).

The official scripts (XRetrieval.py, XVNLI.py, XGQA.py, MARVL.py, WIT.py) evaluate one test file per
language and report each language's metric plus their mean; IGLUE (Bugliarello et al., 2022) reports
the mean over the languages other than English (the zero-shot cross-lingual transfer score).
"""

from typing import Dict, List, Sequence

ENGLISH = "en"


def language_names(paths: Sequence[str], languages: str = "") -> List[str]:
  """`languages` (comma-separated, one per file), else each file's stem's last `_` part
  (xflickrco_test_de.json → de, test_en.json → en)."""
  import os

  if languages:
    names = [x.strip() for x in languages.split(",") if x.strip()]
    if len(names) != len(paths):
      raise ValueError(f"languages {languages!r}: {len(names)} names for {len(paths)} annotation files")
    return names
  return [os.path.splitext(os.path.basename(p))[0].split("_")[-1] for p in paths]


def averages(per_language: Dict[str, Dict[str, float]], keys: Sequence[str]) -> Dict[str, float]:
  """{lang}_{key} for every language, `key` = the mean over all languages (the official scripts' score,
  e.g. XRetrieval.py's test r_mean) and `key`_non_en = the mean over the non-English ones (IGLUE)."""
  out: Dict[str, float] = {}
  for lang, metrics in per_language.items():
    out.update({f"{lang}_{k}": float(v) for k, v in metrics.items()})
  for k in keys:
    vals = [m[k] for m in per_language.values()]
    out[k] = float(sum(vals) / len(vals)) if vals else 0.0
    other = [m[k] for lang, m in per_language.items() if lang != ENGLISH]
    if other:
      out[f"{k}_non_en"] = float(sum(other) / len(other))
  out["num_languages"] = float(len(per_language))
  return out

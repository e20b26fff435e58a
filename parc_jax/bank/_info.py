"""What a bank holds and which scorers it supports (``python -m parc_jax.bank info``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from parc_jax.bank._format import _MODEL_OPTIONAL
from parc_jax.bank._reader import open_bank

_SINGLE_LABEL_FEATURE_SCORERS = (
    "parc", "hscore", "hscore_shrink", "logme", "transrate", "gbc", "gbc_spherical", "knn",
    "logistic", "sfda", "nleep", "pactran_gauss", "ncti", "etran", "lfc",
)  # fmt: skip
# Scorers of a single-label target that read the models' source probabilities.
_PROBS_SCORERS = ("leep", "nce", "pactran_dir", "pactran_gamma")
_MULTILABEL_FEATURE_SCORERS = ("parc", "knn")
_REGRESSION_FEATURE_SCORERS = ("logme", "knn")


def bank_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read (and so validate) a bank and summarise it as a JSON-ready dict.

    Keys: path, shards, sha256, target, task, n, num_classes (for regression: the number of
    outputs), multilabel, num_images, num_models,
    widths ({d: count}), feature_dtypes, architectures ({name: count}), fields (how many models
    carry each optional field), reference ({'kind', 'architectures', 'models_covered'}),
    scorers ({name: models it can score}) and notes (why some scorers are unavailable).
    """
    reader = open_bank(path)
    t = reader.target
    widths: Counter = Counter()
    dtypes: Counter = Counter()
    archs: Counter = Counter()
    fields = dict.fromkeys(_MODEL_OPTIONAL, 0)
    covered = heuristic_ok = 0
    m = 0
    for model in reader.iter_models():
        m += 1
        widths[model.width] += 1
        dtypes[str(model.features.dtype)] += 1
        archs[model.architecture] += 1
        for key in _MODEL_OPTIONAL:
            value = getattr(model, key)
            fields[key] += bool(value) if key == "meta" else value is not None
        covered += t.reference_for(model.architecture) is not None
        heuristic_ok += model.depth is not None and model.source_images is not None
    ref = t.reference_features
    scorers: dict[str, int] = {}
    notes: list[str] = []
    if t.regression:
        scorers.update(dict.fromkeys(_REGRESSION_FEATURE_SCORERS, m))
        if fields["depth"] == m:
            scorers["+l depth prior"] = m
        notes.append("regression target: only logme and knn apply")
    else:
        _classification_scorers(t, m, fields, covered, heuristic_ok, scorers, notes)
    return {
        "path": str(reader.path),
        "shards": [str(s) for s in reader.shards],
        "sha256": reader.sha256(),
        "target": t.name,
        "task": t.task,
        "n": t.n,
        "num_classes": t.num_classes,
        "multilabel": t.multilabel,
        "num_images": t.num_images,
        "num_models": m,
        "widths": {int(k): v for k, v in sorted(widths.items())},
        "feature_dtypes": dict(sorted(dtypes.items())),
        "architectures": dict(sorted(archs.items())),
        "fields": fields,
        "reference": {
            "kind": None if ref is None else ("array" if isinstance(ref, np.ndarray) else "map"),
            "architectures": sorted(ref) if isinstance(ref, dict) else [],
            "models_covered": covered,
        },
        "scorers": scorers,
        "notes": notes,
    }


def _classification_scorers(
    t: Any, m: int, fields: dict, covered: int, heuristic_ok: int, scorers: dict, notes: list
) -> None:
    """Fill ``scorers`` and ``notes`` for a classification or multi-label target."""
    feature_scorers = _MULTILABEL_FEATURE_SCORERS if t.multilabel else _SINGLE_LABEL_FEATURE_SCORERS
    for name in feature_scorers:
        scorers[name] = m
    if t.multilabel:
        notes.append("multi-label target: only parc, rsa, dds and knn apply")
    elif fields["probs"]:
        scorers.update(dict.fromkeys(_PROBS_SCORERS, fields["probs"]))
    else:
        notes.append(f"no probs: {', '.join(_PROBS_SCORERS)} unavailable")
    if covered:
        scorers["rsa"] = scorers["dds"] = covered
    else:
        notes.append("no reference_features for these architectures: rsa and dds unavailable")
    if fields["depth"] == m:
        scorers["+l depth prior"] = m
    else:
        notes.append(f"depth on {fields['depth']}/{m} models: the +l depth prior needs all")
    if t.num_images is not None and heuristic_ok:
        scorers["heuristic"] = heuristic_ok
    else:
        notes.append(
            "heuristic needs depth and source_images per model and num_images on the target"
        )


def _format_info(info: dict[str, Any]) -> str:
    def counts(d: Mapping) -> str:
        return ", ".join(f"{k} x{v}" for k, v in d.items())

    m = info["num_models"]
    ref = info["reference"]
    ref_text = "none"
    if ref["kind"] == "array":
        ref_text = f"one array for all models ({ref['models_covered']}/{m} models)"
    elif ref["kind"] == "map":
        ref_text = f"per architecture {ref['architectures']} ({ref['models_covered']}/{m} models)"
    count_label = "outputs:" if info["task"] == "regression" else "K:"
    lines = [
        f"bank:          {info['path']} ({len(info['shards'])} shard(s))",
        f"sha256:        {info['sha256']}",
        f"target:        {info['target']}",
        f"n:             {info['n']}",
        f"task:          {info['task']}",
        f"{count_label:<15}{info['num_classes']}",
        f"multilabel:    {'yes' if info['multilabel'] else 'no'}",
        f"num_images:    {info['num_images'] if info['num_images'] is not None else 'absent'}",
        f"models:        {m}",
        f"widths:        {counts(info['widths'])}",
        f"dtypes:        {counts(info['feature_dtypes'])}",
        f"architectures: {counts(info['architectures'])}",
        "fields:        " + ", ".join(f"{k} {v}/{m}" for k, v in info["fields"].items()),
        f"reference:     {ref_text}",
        "scorers:       " + ", ".join(f"{k} ({v}/{m})" for k, v in info["scorers"].items()),
    ]
    lines += [f"note:          {note}" for note in info["notes"]]
    return "\n".join(lines)

"""Input checks run in Python before anything is traced.

Every public scorer calls these on concrete arrays; tracers (inside ``jit``/``vmap``) are
passed through unchecked, because the engine validates whole banks on the host before it
traces anything. Each failure is a ``ValueError`` that names the argument and says what to do.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

__all__ = [
    "check_features",
    "check_labels",
    "check_mask",
    "check_n_dims",
    "check_positive_scalar",
    "check_probs",
    "check_regression_targets",
    "is_traced",
    "label_info",
]

PROB_SUM_TOL = 1e-3


def is_traced(*xs: Any) -> bool:
    """True if any argument is a JAX tracer (we are inside jit/vmap/grad)."""
    jax = sys.modules.get("jax")  # not imported yet: nothing can be a tracer
    return jax is not None and any(isinstance(x, jax.core.Tracer) for x in xs)


def _as_numpy(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from None


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name}: contains {bad} NaN or infinite value(s); clean or drop those samples first"
        )


def check_features(
    features: Any, name: str = "features", *, n: int | None = None, min_rows: int = 2
) -> np.ndarray:
    """Check a ``[n, d]`` float matrix; returns it as a NumPy array."""
    arr = _as_numpy(features, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array [n, d] (one row per probe image), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point values, got dtype {arr.dtype}")
    if arr.shape[0] < min_rows:
        raise ValueError(
            f"{name}: needs at least {min_rows} rows (probe images), got {arr.shape[0]}"
        )
    if arr.shape[1] < 1:
        raise ValueError(f"{name}: has no columns (shape {arr.shape})")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name}: has {arr.shape[0]} rows but the labels describe {n} probe images; "
            "features and labels must come from the same probe set"
        )
    _check_finite(arr, name)
    return arr


def check_mask(mask: Any, width: int, name: str) -> None:
    """Check an optional boolean mask of ``width`` valid-column flags."""
    if mask is None:
        return
    arr = _as_numpy(mask, name)
    if arr.shape != (width,):
        raise ValueError(f"{name}: expected shape ({width},) to match the columns, got {arr.shape}")
    if arr.dtype != np.bool_:
        raise ValueError(f"{name}: expected a boolean mask, got dtype {arr.dtype}")
    if not arr.any():
        raise ValueError(f"{name}: marks no column as valid")


def label_info(labels: np.ndarray) -> tuple[bool, np.ndarray]:
    """``(multilabel, counts)``; counts per class (positives per column if multi-label)."""
    if labels.ndim == 2:
        return True, labels.sum(axis=0)
    return False, np.bincount(labels)


def check_labels(
    labels: Any,
    *,
    num_classes: int | None,
    n: int | None = None,
    allow_multilabel: bool = False,
    min_per_class: int = 0,
    method: str = "this score",
) -> tuple[np.ndarray, int]:
    """Check target labels; returns ``(labels as NumPy, K)``.

    Single-label: integers ``[n]`` in ``0..K-1``. Multi-label: 0/1 ``[n, K]`` with no row all
    0 or all 1 (such a row has no correlation). ``min_per_class`` samples are required for
    every class that occurs (classes that do not occur in the probe are allowed: a probe may
    sample classes).
    """
    arr = _as_numpy(labels, "labels")
    if num_classes is not None and (
        not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool)
    ):
        raise ValueError(f"num_classes: expected an int, got {num_classes!r}")
    if arr.ndim == 2:
        if not allow_multilabel:
            raise ValueError(
                f"labels: {method} is defined for single-label targets only (integer labels "
                f"[n]); got a [n, K] multi-label matrix of shape {arr.shape}. Multi-label "
                "targets work with parc, rsa, dds and knn"
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"labels: expected a numeric 0/1 matrix, got dtype {arr.dtype}")
        _check_finite(arr.astype(np.float64), "labels")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("labels: a multi-label matrix must hold only 0 and 1")
        k = arr.shape[1]
        if num_classes is not None and num_classes != k:
            raise ValueError(f"num_classes: is {num_classes} but labels have {k} columns")
        if k < 2:
            raise ValueError("labels: a multi-label matrix needs at least 2 columns")
        row_sums = arr.sum(axis=1)
        bad = np.flatnonzero((row_sums == 0) | (row_sums == k))
        if bad.size:
            raise ValueError(
                f"labels: multi-label row(s) {bad[:5].tolist()} are all 0 or all 1 and have no "
                "correlation with other rows; drop those probe images"
            )
        out = arr.astype(np.float32)
    elif arr.ndim == 1:
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"labels: expected integer class indices, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating):
            _check_finite(arr, "labels")
            if not np.all(arr == np.round(arr)):
                raise ValueError("labels: expected integer class indices, got fractional values")
        out = arr.astype(np.int64)
        if out.size and out.min() < 0:
            raise ValueError(f"labels: class indices must be >= 0, found {out.min()}")
        k = int(num_classes) if num_classes is not None else int(out.max()) + 1
        if out.size and out.max() >= k:
            raise ValueError(
                f"labels: class index {out.max()} is out of range for num_classes={k} "
                "(labels must lie in 0..num_classes-1)"
            )
        if k < 2:
            raise ValueError("num_classes: at least 2 classes are needed to score a target")
        present = np.bincount(out, minlength=k)
        if np.count_nonzero(present) < 2:
            raise ValueError("labels: the probe holds a single class; at least 2 are needed")
        out = out.astype(np.int32)
    else:
        raise ValueError(
            f"labels: expected [n] integer classes or a [n, K] 0/1 matrix, got shape {arr.shape}"
        )
    if n is not None and out.shape[0] != n:
        raise ValueError(
            f"labels: has {out.shape[0]} entries but features have {n} rows; features and "
            "labels must come from the same probe set"
        )
    if min_per_class > 0:
        _, counts = label_info(out)
        present = counts[counts > 0]
        if present.size and present.min() < min_per_class:
            cls = int(np.flatnonzero((counts > 0) & (counts < min_per_class))[0])
            raise ValueError(
                f"labels: class {cls} has {int(counts[cls])} probe sample(s) but {method} needs "
                f"at least {min_per_class} per class; draw a larger probe or drop that class"
            )
    return out, k


def check_regression_targets(
    targets: Any, *, n: int | None = None, method: str = "this score"
) -> np.ndarray:
    """Check regression targets: finite real values ``[n]`` or ``[n, C]``, at least 2 rows,
    every output varying over the probe; returns them as float64 NumPy in the shape given."""
    arr = _as_numpy(targets, "labels")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(
            f"labels: {method} takes real-valued regression targets, got dtype {arr.dtype}"
        )
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
        raise ValueError(
            f"labels: regression targets must be [n] or [n, C] real values, got shape {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise ValueError(f"labels: needs at least 2 probe images, got {arr.shape[0]}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"labels: has {arr.shape[0]} rows but features have {n}; features and targets must "
            "come from the same probe set"
        )
    out = arr.astype(np.float64)
    _check_finite(out, "labels")
    cols = out.reshape(out.shape[0], -1)
    flat = np.flatnonzero(np.all(cols == cols[:1], axis=0))
    if flat.size:
        raise ValueError(
            f"labels: regression output {int(flat[0])} is the same for every probe image: it "
            "has nothing to predict; drop that output"
        )
    return out


class EmptyClassesWarning(UserWarning):
    """A classification target declares classes that no probe image has."""


def check_class_coverage(labels: np.ndarray, num_classes: int, *, where: str = "labels") -> None:
    """Single-label targets: every declared class should have a probe image.

    Class 0 empty while every class ``1..K-1`` has images is the signature of 1-based labels,
    which would score a target with a phantom class: a ``ValueError`` with the fix. Other empty
    classes are legal (a probe may sample the classes) but usually a mistake: one
    :class:`EmptyClassesWarning` naming them. ``where`` names the labels in the error.
    """
    if labels.ndim != 1 or labels.size == 0:
        return
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]
    empty = np.flatnonzero(counts == 0)
    if not empty.size:
        return
    if empty.tolist() == [0] and num_classes > 2:
        raise ValueError(
            f"{where}: class 0 has no probe image while every class 1..{num_classes - 1} has: "
            f"the labels look 1-based; subtract 1 from them and declare {num_classes - 1} "
            "classes"
        )
    shown = ", ".join(map(str, empty[:10].tolist())) + (", ..." if empty.size > 10 else "")
    # one location and text for every caller: Python's default filter shows it once
    warnings.warn(
        f"labels: {empty.size} of the {num_classes} declared classes have no probe image "
        f"(class {shown}); scorers see only the classes present",
        EmptyClassesWarning,
        stacklevel=1,
    )


def check_probs(probs: Any, *, n: int | None = None, name: str = "probs") -> np.ndarray:
    """Check source-class probabilities ``[n, z]``: finite, non-negative, rows sum to 1."""
    arr = check_features(probs, name, n=n, min_rows=1)
    wide = arr.astype(np.float64)
    if wide.min() < 0:
        raise ValueError(f"{name}: probabilities must be non-negative (min {wide.min():.3g})")
    sums = wide.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROB_SUM_TOL:
        raise ValueError(
            f"{name}: row {worst} sums to {sums[worst]:.6g}, not 1 (tolerance {PROB_SUM_TOL}); "
            "pass softmax probabilities, not logits"
        )
    return arr


def check_n_dims(n_dims: Any, name: str = "n_dims") -> None:
    """``n_dims`` must be None (no reduction) or a positive int."""
    if n_dims is None:
        return
    if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
        raise ValueError(f"{name}: expected a positive int or None (no reduction), got {n_dims!r}")


def check_positive_scalar(value: Any, name: str) -> float:
    """A finite, positive real number (depths, dataset sizes, hyper-parameters)."""
    try:
        out = float(np.asarray(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from None
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return out

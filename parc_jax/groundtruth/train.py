"""Training, full fine-tuning and learning-rate grid search for the ground truth (optax + Flax).

Optimiser: SGD with momentum (``optax.trace``) and L2 weight decay on weight matrices and
kernels (``optax.add_decayed_weights``, biases and norm parameters excluded), stepped by
``-lr * factor(step)`` with a linear warm-up then cosine decay to zero. The peak learning rate,
the step count and the schedule length live *in the train state* as arrays, so one compiled
step serves every learning rate, every run length and - vmapped - a whole grid at once.

Heads: a model's classifier may be wider than the dataset's class count (``head_width``): the
logits of absent classes are masked to a large negative value, so their softmax mass, loss and
gradient are exactly zero and the model is the K-way classifier. One head width for all
datasets of a benchmark means one compiled program per architecture instead of one per
(architecture, class count) - compile time dominates small runs on a 2-core CPU.

Grid search: every learning rate trains on the same batches (data order and augmentation come
from a NumPy Generator seeded by ``(seed, epoch)``), is scored on the validation split, and the
best (ties: the first in the grid) is scored on the test split. ``grid="vmap"`` trains the grid
as one vmapped program (the GPU default); ``grid="loop"`` loops the members over one compiled
step (the CPU default: vmapping turns convolutions into grouped ones, measured 3.5x slower).
Both give the same members up to float rounding.

Checkpoints (``flax.serialization`` msgpack, written atomically) are taken after every epoch;
a run restarted with the same arguments resumes from them and ends in the same state.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct
from tqdm.auto import tqdm

from parc_jax.atomic import write_bytes
from parc_jax.groundtruth.data import Dataset, Split, augment, seeded_rng
from parc_jax.groundtruth.zoo import init_variables, unfreeze

log = logging.getLogger(__name__)


_NEG = -1e9  # masked logit: exp underflows to exactly 0 in float32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train one model (hyper-parameters other than the learning rate).

    epochs: passes over the training split; raised so that the run has at least ``min_steps``
    optimiser steps (small datasets). batch_size: training batch (the last partial batch of an
    epoch is dropped). warmup_fraction: share of the steps spent in linear warm-up.
    augment_pad: random translation in pixels (0 = none); flips follow ``Dataset.flip``.
    class_balanced: weight each example's loss by ``n / (K * n_k)`` for its class ``k`` (``n``
    examples, ``K`` classes present in the training split) and average with those weights, so
    that on a skewed split predicting the majority class is not a minimum of the loss
    (pneumonia trains on 88 % one class; its test split is 62.5 %). On a balanced split every
    weight is 1 and the loss is the plain mean. The presets turn it on for the runs on a
    target (fine-tuning, from scratch, references), not for pretraining on the pool, whose
    mix of datasets makes its many small classes rare by design.
    """

    epochs: int = 10
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05
    min_steps: int = 0
    augment_pad: int = 2
    augment: bool = True
    eval_batch_size: int = 256
    class_balanced: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ValueError(f"TrainConfig.min_steps must be an int >= 0, got {self.min_steps!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"TrainConfig.momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(
                f"TrainConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}"
            )

    def plan(self, num_train: int) -> tuple[int, int, int]:
        """``(epochs, steps_per_epoch, batch_size)`` for a training split of ``num_train``."""
        if num_train < 1:
            raise ValueError("train split is empty; nothing to train on")
        batch = min(self.batch_size, num_train)
        steps = num_train // batch
        epochs = max(self.epochs, math.ceil(self.min_steps / steps))
        return epochs, steps, batch


@struct.dataclass
class TrainState:
    """Everything one training run carries between steps (a pytree; stackable for vmap).

    ``model_state``: mutable collections (``batch_stats``), possibly empty. ``lr``: peak
    learning rate; ``total_steps`` and ``warmup_steps``: the schedule; all float32/int32 arrays.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array
    lr: jax.Array
    total_steps: jax.Array
    warmup_steps: jax.Array


def _decay_mask(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


@dataclasses.dataclass(frozen=True)
class _Opt:
    momentum: float
    weight_decay: float

    def tx(self) -> optax.GradientTransformation:
        return optax.chain(
            optax.add_decayed_weights(self.weight_decay, mask=_decay_mask),
            optax.trace(decay=self.momentum),
        )


def schedule_factor(step: jax.Array, total_steps: jax.Array, warmup_steps: jax.Array) -> jax.Array:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine to 0."""
    step = step.astype(jnp.float32)
    total = total_steps.astype(jnp.float32)
    warm = warmup_steps.astype(jnp.float32)
    up = (step + 1.0) / jnp.maximum(warm, 1.0)
    progress = (step - warm) / jnp.maximum(total - warm, 1.0)
    down = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)))
    return jnp.where(step < warm, up, down)


def class_mask(num_classes: int, head_width: int) -> np.ndarray:
    """bool ``[head_width]``: True for the dataset's ``num_classes`` classes."""
    if num_classes > head_width:
        raise ValueError(
            f"num_classes ({num_classes}) exceeds the model's head width ({head_width}); "
            "build the model with num_classes >= the dataset's classes"
        )
    return np.arange(head_width) < num_classes


def class_weights(labels: np.ndarray, head_width: int, *, balanced: bool) -> np.ndarray:
    """Per-class loss weights ``[head_width]`` float32: ``n / (K * n_k)`` for the ``K`` classes
    present in ``labels`` when ``balanced`` (0 for absent ones, which never occur), else 1."""
    if not balanced:
        return np.ones(head_width, np.float32)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=head_width)[:head_width]
    present = counts > 0
    weights = np.zeros(head_width, np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def masked_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Logits ``[b, w]`` with the columns where ``mask [w]`` is False set to -1e9."""
    return jnp.where(mask, logits, _NEG)


def _apply_train(model: nn.Module, params: Any, model_state: Any, x: jax.Array):
    if model_state:
        (feats, logits), new = model.apply(
            {"params": params, **model_state}, x, train=True, mutable=list(model_state)
        )
        return feats, logits, unfreeze(new)
    feats, logits = model.apply({"params": params}, x, train=True)
    return feats, logits, model_state


def _step_impl(state: TrainState, x, y, mask, weights, *, model: nn.Module, opt: _Opt):
    def loss_fn(params):
        _, logits, new_state = _apply_train(model, params, state.model_state, x)
        logits = masked_logits(logits, mask)
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        w = weights[y]
        loss = jnp.sum(w * per_example) / jnp.sum(w)
        return loss, new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.tx().update(grads, state.opt_state, state.params)
    scale = -state.lr * schedule_factor(state.step, state.total_steps, state.warmup_steps)
    params = jax.tree_util.tree_map(lambda p, u: p + scale * u, state.params, updates)
    new = state.replace(
        params=params, model_state=new_state, opt_state=opt_state, step=state.step + 1
    )
    return new, loss


_train_step = jax.jit(_step_impl, static_argnames=("model", "opt"))


def _grid_impl(states: TrainState, x, y, mask, weights, *, model: nn.Module, opt: _Opt):
    step = functools.partial(_step_impl, model=model, opt=opt)
    return jax.vmap(step, in_axes=(0, None, None, None, None))(states, x, y, mask, weights)


_train_step_grid = jax.jit(_grid_impl, static_argnames=("model", "opt"))


def _eval_impl(variables, x, *, model: nn.Module):
    return model.apply(variables, x, train=False)


_eval_step = jax.jit(_eval_impl, static_argnames=("model",))


def eval_fn(model: nn.Module) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
    """Jitted inference ``(variables, x [b, s, s, 3]) -> (features [b, d], logits [b, w])``.

    Compiled once per (model, batch shape) and shared by every caller.
    """
    return functools.partial(_eval_step, model=model)


@functools.partial(jax.jit, static_argnames=("opt",))
def _opt_init(params: Any, *, opt: _Opt) -> Any:
    return opt.tx().init(params)


def init_state(
    variables: Mapping[str, Any], *, lr: float, total_steps: int, warmup_steps: int, opt: _Opt
) -> TrainState:
    """A fresh :class:`TrainState` from model ``variables`` (``params`` + mutable collections)."""
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(
        params=params,
        model_state=model_state,
        opt_state=_opt_init(params, opt=opt),
        step=jnp.asarray(0, jnp.int32),
        lr=jnp.asarray(lr, jnp.float32),
        total_steps=jnp.asarray(total_steps, jnp.int32),
        warmup_steps=jnp.asarray(warmup_steps, jnp.int32),
    )


def state_variables(state: TrainState) -> dict[str, Any]:
    """Model variables (``params`` + mutable collections) of a train state."""
    return {"params": state.params, **state.model_state}


def epoch_batches(
    num: int, *, batch_size: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.random.Generator]:
    """Index batches ``[steps, batch_size]`` of one epoch and the Generator for augmentation.

    The order depends only on ``(seed, epoch)``, so resumed and vmapped runs see the same data.
    """
    rng = seeded_rng(seed, "epoch", str(epoch))
    steps = num // batch_size
    order = rng.permutation(num)[: steps * batch_size]
    return order.reshape(steps, batch_size), rng


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: str | os.PathLike, state: Any, *, epoch: int) -> None:
    """Write ``{"epoch", "state"}`` with flax serialization, atomically."""
    data = serialization.to_bytes({"epoch": np.int64(epoch), "state": state})
    write_bytes(Path(path), data, parents=True)


def load_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, int] | None:
    """``(state, epoch)`` from a checkpoint shaped like ``template``, or None if absent."""
    p = Path(path)
    if not p.is_file():
        return None
    restored = serialization.from_bytes({"epoch": np.int64(0), "state": template}, p.read_bytes())
    return restored["state"], int(restored["epoch"])


def save_variables(path: str | os.PathLike, variables: Mapping[str, Any], meta: Mapping) -> None:
    """Write model ``variables`` and a ``meta`` dict (msgpack-native values), atomically."""
    tree = {"variables": serialization.to_state_dict(dict(variables)), "meta": dict(meta)}
    write_bytes(Path(path), serialization.msgpack_serialize(tree), parents=True)


def load_variables(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(variables, meta)`` written by :func:`save_variables` (NumPy arrays)."""
    tree = serialization.msgpack_restore(Path(path).read_bytes())
    return unfreeze(tree["variables"]), dict(tree.get("meta", {}))


# ---------------------------------------------------------------------------------------------
# Training


def _resolve_grid(grid: str, members: int) -> str:
    if grid not in ("auto", "loop", "vmap"):
        raise ValueError(f"grid must be 'auto', 'loop' or 'vmap', got {grid!r}")
    if grid == "auto":
        return "vmap" if jax.default_backend() != "cpu" and members > 1 else "loop"
    return grid


def train(
    model: nn.Module,
    variables: Mapping[str, Any],
    split: Split,
    *,
    num_classes: int,
    learning_rates: Sequence[float],
    config: TrainConfig,
    seed: int,
    flip: bool = False,
    grid: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Train ``model`` from ``variables`` on ``split`` once per learning rate (all weights).

    split.images: float32 ``[n, s, s, 3]``; split.labels: int ``[n]`` in ``0..num_classes-1``.
    Returns the final variables of each member, in ``learning_rates`` order. ``checkpoint``:
    a path prefix; state is saved after every epoch and resumed from on a rerun.
    """
    lrs = [float(v) for v in learning_rates]
    if not lrs or any(not math.isfinite(v) or v <= 0 for v in lrs):
        raise ValueError(f"learning_rates must be positive finite numbers, got {learning_rates!r}")
    labels = np.asarray(split.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"split.labels must lie in 0..{num_classes - 1} (num_classes)")
    head = np.asarray(variables["params"]["head"]["kernel"]).shape[-1]
    mask = jnp.asarray(class_mask(num_classes, head))
    weights = jnp.asarray(class_weights(labels, head, balanced=config.class_balanced))
    epochs, steps, batch = config.plan(len(split))
    total = epochs * steps
    warm = int(round(config.warmup_fraction * total))
    opt = _Opt(config.momentum, config.weight_decay)
    mode = _resolve_grid(grid, len(lrs))
    variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
    states = [
        init_state(variables, lr=lr, total_steps=total, warmup_steps=warm, opt=opt) for lr in lrs
    ]
    ckpt = None if checkpoint is None else Path(checkpoint)

    def run(state: TrainState, step_fn: Callable, path: Path | None, label: str) -> TrainState:
        start = 0
        if path is not None:
            loaded = load_checkpoint(path, state)
            if loaded is not None:
                state, start = loaded
                state = jax.tree_util.tree_map(jnp.asarray, state)
                log.info("%s: resumed at epoch %d/%d from %s", label, start, epochs, path)
        bar = tqdm(
            total=total,
            initial=start * steps,
            desc=label,
            disable=not progress,
            leave=False,
            unit="step",
        )
        for epoch in range(start, epochs):
            order, rng = epoch_batches(len(split), batch_size=batch, seed=seed, epoch=epoch)
            loss = None
            for idx in order:
                x = split.images[idx]
                if config.augment:
                    x = augment(x, rng, pad=config.augment_pad, flip=flip)
                state, loss = step_fn(
                    state, jnp.asarray(x), jnp.asarray(labels[idx]), mask, weights
                )
                bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{float(jnp.mean(loss)):.3f}", refresh=False)
            if path is not None:
                save_checkpoint(path, state, epoch=epoch + 1)
        bar.close()
        return state

    if mode == "vmap":
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
        path = None if ckpt is None else ckpt.with_name(ckpt.name + ".grid.ckpt")
        stacked = run(
            stacked,
            lambda s, x, y, m, w: _train_step_grid(s, x, y, m, w, model=model, opt=opt),
            path,
            desc,
        )
        finals = [jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(len(lrs))]
    else:
        finals = []
        for i, state in enumerate(states):
            path = None if ckpt is None else ckpt.with_name(f"{ckpt.name}.lr{i}.ckpt")
            label = f"{desc} lr={lrs[i]:g}"
            finals.append(
                run(
                    state,
                    lambda s, x, y, m, w: _train_step(s, x, y, m, w, model=model, opt=opt),
                    path,
                    label,
                )
            )
    return [state_variables(s) for s in finals]


def predict(
    model: nn.Module, variables: Mapping[str, Any], images: np.ndarray, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode ``(features [n, d], logits [n, w])`` as float32 NumPy, in fixed-size batches."""
    return extract(eval_fn(model), variables, images, batch_size=batch_size)


def extract(
    apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    variables: Any,
    images: np.ndarray,
    *,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """``apply_fn(variables, x [b, ...]) -> (features [b, d], logits [b, z])`` over all images.

    Every batch is zero-padded to ``batch_size`` so every call has one shape (one compile
    per model, whatever ``n``); padded rows are dropped. Returns float32 NumPy ``[n, d]`` and
    ``[n, z]``.
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("images: empty; nothing to extract")
    bs = batch_size
    feats, logits = [], []
    for start in range(0, n, bs):
        x = images[start : start + bs]
        k = x.shape[0]
        if k < bs:
            x = np.concatenate([x, np.zeros((bs - k,) + x.shape[1:], x.dtype)])
        f, lo = apply_fn(variables, jnp.asarray(x))
        feats.append(np.asarray(f, np.float32)[:k])
        logits.append(np.asarray(lo, np.float32)[:k])
    return np.concatenate(feats), np.concatenate(logits)


def predicted_classes(
    model: nn.Module,
    variables: Mapping[str, Any],
    split: Split,
    *,
    num_classes: int,
    batch_size: int = 256,
) -> np.ndarray:
    """Top-1 class ``[n]`` of ``model`` on ``split``, among the dataset's ``num_classes``."""
    _, logits = predict(model, variables, split.images, batch_size=batch_size)
    return np.argmax(logits[:, :num_classes], axis=1)


def accuracy(
    model: nn.Module,
    variables: Mapping[str, Any],
    split: Split,
    *,
    num_classes: int,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy in percent of ``model`` on ``split`` (classes beyond K masked)."""
    pred = predicted_classes(
        model, variables, split, num_classes=num_classes, batch_size=batch_size
    )
    return float(100.0 * np.mean(pred == split.labels))


def balanced_accuracy(
    model: nn.Module,
    variables: Mapping[str, Any],
    split: Split,
    *,
    num_classes: int,
    batch_size: int = 256,
) -> float:
    """Mean over the classes present in ``split`` of the per-class accuracy (recall), in percent.

    Equals :func:`accuracy` on a balanced split; a model that predicts one class scores
    ``100 / K`` whatever the class proportions, which is what makes it the validation measure
    of :func:`grid_search` on skewed splits.
    """
    pred = predicted_classes(
        model, variables, split, num_classes=num_classes, batch_size=batch_size
    )
    return mean_class_accuracy(pred, split.labels)


def mean_class_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the share of them predicted right, %."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    recalls = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    return float(100.0 * np.mean(recalls))


def new_head(
    model: nn.Module, source_variables: Mapping[str, Any], key: int | jax.Array, *, image_size: int
) -> dict[str, Any]:
    """Variables for fine-tuning: every source weight and statistic, and a fresh ``head``.

    ``model`` carries the target's head width; its other layers must match the source's.
    """
    fresh = init_variables(model, key, image_size=image_size)
    out: dict[str, Any] = {}
    for col, tree in fresh.items():
        if col not in source_variables:
            raise ValueError(f"source_variables: missing collection {col!r} for this model")
        src = dict(source_variables[col])
        if col == "params":
            src["head"] = tree["head"]
        got = jax.tree_util.tree_structure(src)
        want = jax.tree_util.tree_structure(tree)
        shapes_ok = got == want and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(
                jax.tree_util.tree_leaves(src), jax.tree_util.tree_leaves(tree), strict=True
            )
        )
        if not shapes_ok:
            raise ValueError(
                f"source_variables: collection {col!r} does not match the model's layers; "
                "fine-tune with the same architecture and width as the source"
            )
        out[col] = jax.tree_util.tree_map(jnp.asarray, src)
    return out


@dataclasses.dataclass
class GridResult:
    """Outcome of a learning-rate grid search (accuracies in percent).

    ``val_accuracies``: balanced validation accuracy per trained rate (:func:`balanced_accuracy`).
    ``status``: per trained rate, ``"ok"``, ``"collapsed"`` (balanced validation accuracy
    within ``collapse_margin`` points of ``100 / K``, the score of a model that predicts one
    class) or ``"diverged"`` (non-finite weights). ``all_failed``: no rate trained without
    collapsing or diverging; the best of them is kept and must be flagged by the caller.
    """

    lr: float
    test_accuracy: float
    val_accuracies: dict[float, float]
    epochs: int
    seconds: float
    variables: dict[str, Any]
    status: dict[float, str] = dataclasses.field(default_factory=dict)
    all_failed: bool = False


def majority_rate(labels: np.ndarray) -> float:
    """Accuracy (%) of always predicting the most frequent label."""
    labels = np.asarray(labels)
    return float(100.0 * np.bincount(labels).max() / labels.size) if labels.size else 0.0


def _member_status(variables: Mapping[str, Any], val: float, floor: float) -> str:
    leaves = jax.tree_util.tree_leaves(variables.get("params", variables))
    if not all(bool(np.all(np.isfinite(np.asarray(a)))) for a in leaves):
        return "diverged"
    return "collapsed" if val <= floor else "ok"


def next_learning_rate(
    vals: Mapping[float, float],
    status: Mapping[float, str],
    *,
    base: Sequence[float],
    extend: int,
) -> float | None:
    """The next rate :func:`grid_search` trains, or None when the grid is done.

    ``vals``/``status``: validation accuracy and status of every rate trained so far (the
    ``base`` grid and earlier extensions). Rates beyond the base grid are spaced like its
    outermost pair (x sqrt(10) for a single rate), at most ``extend`` on each side: below the
    smallest while every rate failed or the best is the smallest, above the largest while the
    best is the largest. Ties on accuracy count for the smaller rate.
    """
    lo, hi = sorted(base)[0], sorted(base)[-1]
    rates = sorted(vals)
    b = sorted(base)
    ratio_lo = b[1] / b[0] if len(b) > 1 else 10**0.5
    ratio_hi = b[-1] / b[-2] if len(b) > 1 else 10**0.5
    below = sum(r < lo for r in rates)
    above = sum(r > hi for r in rates)
    ok = [r for r in rates if status[r] == "ok"]
    if not ok or max(ok, key=lambda r: (vals[r], -r)) == rates[0]:
        return float(f"{rates[0] / ratio_lo:.4g}") if below < extend else None
    if max(ok, key=lambda r: (vals[r], -r)) == rates[-1] and above < extend:
        return float(f"{rates[-1] * ratio_hi:.4g}")
    return None


def grid_search(
    model: nn.Module,
    variables: Mapping[str, Any],
    dataset: Dataset,
    *,
    learning_rates: Sequence[float],
    config: TrainConfig,
    seed: int,
    grid: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "train",
    extend: int = 0,
    collapse_margin: float = 1.0,
) -> GridResult:
    """Train once per learning rate, pick the best on ``dataset.val``, score it on the test.

    The validation measure is :func:`balanced_accuracy` (plain accuracy on a balanced split):
    on a skewed split plain accuracy would prefer a model that predicts the majority class.

    A rate whose model diverged or collapsed (:class:`GridResult` ``status``) is never chosen
    while another trained. ``extend``: up to this many further rates on each side, one at a
    time, spaced like the grid's outermost pair: while the best rate is the grid's smallest
    or largest, the next rate beyond it is trained, so that the chosen rate ends interior (or
    at the cap); while every rate failed, the next smaller rate is tried (collapse and
    divergence come from too large a step). Ties on validation accuracy go to the smaller
    rate.
    """
    if len(dataset.val) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no validation split to choose on")
    if not isinstance(extend, int) or extend < 0:
        raise ValueError(f"extend must be an int >= 0, got {extend!r}")
    lrs0 = sorted(float(v) for v in learning_rates)
    t0 = time.perf_counter()
    k = dataset.num_classes
    bs = config.eval_batch_size
    floor = 100.0 / len(np.unique(dataset.val.labels)) + collapse_margin
    members: dict[float, Any] = {}
    vals: dict[float, float] = {}
    status: dict[float, str] = {}

    def fit(rates: Sequence[float], prefix: str | os.PathLike | None) -> None:
        out = train(
            model, variables, dataset.train, num_classes=k, learning_rates=rates, config=config,
            seed=seed, flip=dataset.flip, grid=grid, checkpoint=prefix, progress=progress,
            desc=desc,
        )  # fmt: skip
        for lr, v in zip(rates, out, strict=True):
            members[lr] = v
            vals[lr] = balanced_accuracy(model, v, dataset.val, num_classes=k, batch_size=bs)
            status[lr] = _member_status(v, vals[lr], floor)

    fit(lrs0, checkpoint)
    while (nxt := next_learning_rate(vals, status, base=lrs0, extend=extend)) is not None:
        prefix = None if checkpoint is None else Path(f"{checkpoint}.x{nxt:g}")
        fit([nxt], prefix)

    rates = sorted(members)
    ok = [lr for lr in rates if status[lr] == "ok"]
    pool = ok or rates
    best = max(pool, key=lambda lr: (vals[lr], -lr))
    test = accuracy(model, members[best], dataset.test, num_classes=k, batch_size=bs)
    epochs, _, _ = config.plan(len(dataset.train))
    return GridResult(
        lr=best,
        test_accuracy=test,
        val_accuracies={lr: vals[lr] for lr in rates},
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        variables=jax.tree_util.tree_map(np.asarray, members[best]),
        status={lr: status[lr] for lr in rates},
        all_failed=not ok,
    )


def remove_checkpoints(prefix: str | os.PathLike) -> None:
    """Delete the per-epoch checkpoints :func:`train` wrote under ``prefix``."""
    p = Path(prefix)
    for f in p.parent.glob(p.name + ".*ckpt"):
        f.unlink(missing_ok=True)

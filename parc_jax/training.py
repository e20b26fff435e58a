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

import contextlib
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
from parc_jax.data import Dataset, Split, augment, seeded_rng
from parc_jax.zoo import init_variables, unfreeze

log = logging.getLogger(__name__)

_NEG = -1e9  # masked logit: exp underflows to exactly 0 in float32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train one model (hyper-parameters other than the learning rate).

    epochs: passes over the training split; raised so that the run has at least ``min_steps``
    optimiser steps (small datasets). batch_size: training batch (the last partial batch of an
    epoch is dropped). warmup_fraction: share of the steps spent in linear warm-up.
    augment_pad: random translation in pixels (0 = none); flips follow ``Dataset.flip``.
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


def _step_impl(state: TrainState, x, y, mask, *, model: nn.Module, opt: _Opt):
    def loss_fn(params):
        _, logits, new_state = _apply_train(model, params, state.model_state, x)
        logits = masked_logits(logits, mask)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
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


def _grid_impl(states: TrainState, x, y, mask, *, model: nn.Module, opt: _Opt):
    step = functools.partial(_step_impl, model=model, opt=opt)
    return jax.vmap(step, in_axes=(0, None, None, None))(states, x, y, mask)


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
                state, loss = step_fn(state, jnp.asarray(x), jnp.asarray(labels[idx]), mask)
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
            lambda s, x, y, m: _train_step_grid(s, x, y, m, model=model, opt=opt),
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
                    lambda s, x, y, m: _train_step(s, x, y, m, model=model, opt=opt),
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


def accuracy(
    model: nn.Module,
    variables: Mapping[str, Any],
    split: Split,
    *,
    num_classes: int,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy in percent of ``model`` on ``split`` (classes beyond K masked)."""
    _, logits = predict(model, variables, split.images, batch_size=batch_size)
    pred = np.argmax(logits[:, :num_classes], axis=1)
    return float(100.0 * np.mean(pred == split.labels))


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
    """Outcome of a learning-rate grid search (accuracies in percent)."""

    lr: float
    test_accuracy: float
    val_accuracies: dict[float, float]
    epochs: int
    seconds: float
    variables: dict[str, Any]


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
) -> GridResult:
    """Train once per learning rate, pick the best on ``dataset.val``, score it on the test.

    Ties on validation accuracy go to the earlier learning rate in the grid.
    """
    if len(dataset.val) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no validation split to choose on")
    t0 = time.perf_counter()
    members = train(
        model,
        variables,
        dataset.train,
        num_classes=dataset.num_classes,
        learning_rates=learning_rates,
        config=config,
        seed=seed,
        flip=dataset.flip,
        grid=grid,
        checkpoint=checkpoint,
        progress=progress,
        desc=desc,
    )
    k = dataset.num_classes
    bs = config.eval_batch_size
    vals = [accuracy(model, v, dataset.val, num_classes=k, batch_size=bs) for v in members]
    best = int(np.argmax(vals))
    test = accuracy(model, members[best], dataset.test, num_classes=k, batch_size=bs)
    epochs, _, _ = config.plan(len(dataset.train))
    return GridResult(
        lr=float(learning_rates[best]),
        test_accuracy=test,
        val_accuracies={float(lr): v for lr, v in zip(learning_rates, vals, strict=True)},
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        variables=jax.tree_util.tree_map(np.asarray, members[best]),
    )


def remove_checkpoints(prefix: str | os.PathLike) -> None:
    """Delete the per-epoch checkpoints :func:`train` wrote under ``prefix``."""
    p = Path(prefix)
    for f in p.parent.glob(p.name + ".*ckpt"):
        f.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Presets and pipeline stages (driven by scripts/)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A ground-truth benchmark: datasets, zoo, sizes and training recipes.

    Sources are trained once per architecture (``source`` recipe, one learning rate); every
    ``(architecture, source, target)`` with ``source != target`` is fully fine-tuned with the
    ``finetune`` recipe over ``finetune_lrs``; every ``(architecture, target)`` is also trained
    from scratch with the ``scratch`` recipe over ``scratch_lrs`` (baseline and the reference
    model for rsa/dds). Caps are stratified; validation is carved before capping.
    """

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    source: TrainConfig
    source_lr: float
    finetune: TrainConfig
    finetune_lrs: tuple[float, ...]
    scratch: TrainConfig
    scratch_lrs: tuple[float, ...]
    architectures: tuple[str, ...] = ("alexnet", "resnet14", "resnet26", "mixer")
    image_size: int = 16
    width: int = 8
    head_width: int = 160
    max_source_train: int | None = 4000
    max_target_train: int | None = 2000
    max_val: int = 500
    max_test: int | None = None
    probe_size: int = 500
    probe_runs: int = 5
    seed: int = 0

    def transfers(self) -> list[tuple[str, str, str]]:
        """Every ``(architecture, source, target)`` except self-transfers, in run order."""
        return [
            (a, s, t)
            for t in self.targets
            for a in self.architectures
            for s in self.sources
            if s != t
        ]


_MNIST_LIKE = ("mnist", "usps", "notmnist", "omniglot1", "omniglot2", "cifar10", "coil20")

PRESETS: dict[str, Preset] = {
    # End to end in about a minute of training plus ~40 s of compiles on 2 idle cores: the
    # tests run it, and scripts/make_example_bank.py builds the packaged example bank from it
    # (3 sources x 4 architectures on coil20, n = 300).
    "tiny": Preset(
        name="tiny",
        sources=("mnist", "usps", "cifar10"),
        targets=("coil20",),
        source=TrainConfig(epochs=6, batch_size=64),
        source_lr=0.2,
        finetune=TrainConfig(epochs=4, batch_size=64),
        finetune_lrs=(0.03, 0.1, 0.3),
        scratch=TrainConfig(epochs=4, batch_size=64),
        scratch_lrs=(0.03, 0.1, 0.3),
        image_size=16,
        width=8,
        head_width=24,
        max_source_train=1024,
        max_target_train=384,
        max_val=100,
        max_test=200,
        probe_size=300,
        probe_runs=1,
    ),
    # The committed benchmark (PARC paper Sec. 3.1 in miniature): 8 sources x 4 architectures
    # x 6 targets without self-transfer = 168 transfers, plus orl and pneumonia as extra
    # targets (64 transfers). Sized for < 2 h on 2 CPU cores: see benchmarks/groundtruth.
    "mini": Preset(
        name="mini",
        sources=_MNIST_LIKE[:5] + ("cifar10", "coil20", "animal_silhouettes"),
        targets=(
            "usps",
            "notmnist",
            "omniglot2",
            "cifar10",
            "coil20",
            "animal_silhouettes",
            "orl",
            "pneumonia",
        ),
        source=TrainConfig(epochs=8, batch_size=128, min_steps=250),
        source_lr=0.1,
        finetune=TrainConfig(epochs=4, batch_size=128, min_steps=40),
        finetune_lrs=(0.03, 0.1, 0.3),
        scratch=TrainConfig(epochs=4, batch_size=128, min_steps=40),
        scratch_lrs=(0.03, 0.1, 0.3),
        image_size=16,
        width=8,
        head_width=160,
        max_source_train=4000,
        max_target_train=1000,
        max_val=500,
        probe_size=500,
        probe_runs=5,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``tiny`` or ``mini``)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


_DATA_CACHE: dict[tuple, Dataset] = {}


def stage_datasets(
    preset: Preset,
    names: Sequence[str],
    *,
    role: str,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Dataset]:
    """The preset's datasets in a role (``source`` or ``target``: different training caps)."""
    from parc_jax.data import load_dataset

    if role not in ("source", "target"):
        raise ValueError(f"role must be 'source' or 'target', got {role!r}")
    cap = preset.max_source_train if role == "source" else preset.max_target_train
    out = {}
    for name in names:
        key = (
            name,
            preset.image_size,
            cap,
            preset.max_val,
            preset.max_test,
            preset.seed,
            str(data_dir),
        )
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = load_dataset(
                name,
                image_size=preset.image_size,
                data_dir=data_dir,
                max_train=cap,
                max_val=preset.max_val,
                max_test=preset.max_test,
                seed=preset.seed,
            )
        ds = _DATA_CACHE[key]
        if ds.num_classes > preset.head_width:
            raise ValueError(
                f"preset {preset.name!r}: dataset {name!r} has {ds.num_classes} classes, "
                f"more than head_width={preset.head_width}; raise head_width"
            )
        out[name] = ds
    return out


def _key(seed: int, *names: str) -> int:
    """An int seed for :func:`parc_jax.zoo.init_variables` derived from the names."""
    return int(seeded_rng(seed, "key", *names).integers(2**31))


# CSV files: small, rewritten whole and atomically after every finished row.

SOURCES_COLUMNS = (
    "architecture", "source", "test_accuracy", "val_accuracy", "lr", "epochs",
    "train_images", "seconds",
)  # fmt: skip
ORACLE_COLUMNS = ("architecture", "source", "target", "accuracy", "lr", "epochs", "seconds")
SCRATCH_COLUMNS = ("architecture", "target", "accuracy", "lr", "epochs", "seconds")
GRID_COLUMNS = ("architecture", "source", "target", "lr", "val_accuracy")


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list if the file does not exist)."""
    import csv

    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Mapping]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``) to ``path`` atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row[c] for c in columns})
    write_bytes(Path(path), buf.getvalue().encode(), parents=True)


def _append_csv(path: Path, columns: Sequence[str], row: Mapping) -> None:
    write_csv(path, columns, [*read_csv(path), {c: row[c] for c in columns}])


def record_stage_time(run_dir: str | os.PathLike, stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage`` in ``<run_dir>/timings.json`` (summed over resumptions;
    :func:`timed_stage` adds interrupted segments too)."""
    import json

    path = Path(run_dir) / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(float(timings.get(stage, 0.0)) + seconds, 2)
    write_bytes(path, (json.dumps(timings, indent=1, sort_keys=True) + "\n").encode(), parents=True)


@contextlib.contextmanager
def timed_stage(run_dir: str | os.PathLike, stage: str):
    """Add the wall time of the ``with`` body to ``stage`` in ``timings.json``, also when it
    is interrupted (KeyboardInterrupt or an exception: the segment is added, then re-raised)."""
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        try:
            record_stage_time(run_dir, stage, time.perf_counter() - t0)
        except Exception as e:  # never hide the interruption behind a bookkeeping error
            log.warning("could not record the time of the interrupted %s stage: %s", stage, e)
        raise
    record_stage_time(run_dir, stage, time.perf_counter() - t0)


RUN_RECORD = "preset.json"


def preset_record(preset: Preset) -> dict[str, Any]:
    """What a run dir records of the preset that made it: its name and its whole recipe (every
    field of :class:`Preset`, training configs included), JSON-ready."""
    import json

    return {"preset": preset.name, "recipe": json.loads(json.dumps(dataclasses.asdict(preset)))}


def check_run_dir(preset: Preset, run_dir: str | os.PathLike) -> None:
    """Refuse ``run_dir`` if it was made with another preset or recipe; record ``preset`` in
    ``<run_dir>/preset.json`` (atomically) on first use. A run dir without the record (runs
    older than it) is accepted and the record written then."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / RUN_RECORD
    want = preset_record(preset)
    if path.is_file():
        try:
            got = json.loads(path.read_text())
            name, recipe = got["preset"], dict(got["recipe"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"run dir {run_dir}: unreadable {path} ({e}); use another --run-dir"
            ) from None
        if name != want["preset"] or recipe != want["recipe"]:
            diff = sorted(
                k for k in set(recipe) | set(want["recipe"])
                if k != "name" and recipe.get(k) != want["recipe"].get(k)
            )  # fmt: skip
            what = f"differs in {', '.join(diff)}" if diff else "another recipe"
            raise ValueError(
                f"run dir {run_dir} was made with preset {name} ({what} from preset "
                f"{preset.name}); use another --run-dir or the same preset"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(path, (json.dumps(want, indent=1, sort_keys=True) + "\n").encode(), parents=True)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def train_sources(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    grid: str = "auto",
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """Train every ``(architecture, source)`` model of ``preset`` into ``run_dir``.

    Writes ``sources/<arch>/<source>.msgpack`` (variables + meta) and a row of
    ``sources.csv`` per model; a model whose file and row exist is skipped, one interrupted
    mid-training resumes from its last epoch checkpoint. Returns the CSV rows. A run dir made
    with another preset or recipe is refused (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    with timed_stage(run_dir, "sources"):
        return _train_sources(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)


def _train_sources(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.zoo import make_model

    csv_path = run_dir / "sources.csv"
    done = {(r["architecture"], r["source"]) for r in read_csv(csv_path)}
    data = stage_datasets(preset, preset.sources, role="source", data_dir=data_dir)
    jobs = [(a, s) for a in preset.architectures for s in preset.sources]
    for arch, source in tqdm(jobs, desc=f"sources [{preset.name}]", disable=not progress):
        out = run_dir / "sources" / arch / f"{source}.msgpack"
        if (arch, source) in done and out.is_file():
            continue
        ds = data[source]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(model, _key(preset.seed, arch, source), image_size=ds.image_size)
        prefix = run_dir / "ckpt" / "sources" / arch / source
        res = grid_search(
            model, variables, ds, learning_rates=[preset.source_lr], config=preset.source,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/{source}",
        )  # fmt: skip
        meta = {
            "architecture": arch, "source": source, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "image_size": ds.image_size,
            "train_images": len(ds.train), "test_accuracy": res.test_accuracy,
            "val_accuracy": res.val_accuracies[res.lr], "lr": res.lr, "epochs": res.epochs,
            "mean": [float(v) for v in ds.mean], "std": [float(v) for v in ds.std],
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        row = dict(meta, seconds=round(res.seconds, 2))
        row = {k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
        _append_csv(csv_path, SOURCES_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info("source %s/%s: test %.2f%% (%.1fs)", arch, source, res.test_accuracy, res.seconds)
    return read_csv(csv_path)


def run_transfers(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    grid: str = "auto",
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """From-scratch baselines, then every fine-tuning transfer of ``preset``, into ``run_dir``.

    Scratch: ``scratch/<arch>/<target>.msgpack`` + ``scratch.csv``. Transfers: one row of
    ``oracle.csv`` (architecture, source, target, accuracy %, lr, epochs, seconds) each and the
    validation accuracy of every grid learning rate in ``grid.csv``. Finished rows are skipped
    (resumable); needs the sources stage. Returns the oracle rows. A run dir made with another
    preset or recipe is refused (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    with timed_stage(run_dir, "transfers"):
        return _run_transfers(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)


def _run_transfers(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.zoo import make_model

    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    scratch_csv = run_dir / "scratch.csv"
    done = {(r["architecture"], r["target"]) for r in read_csv(scratch_csv)}
    jobs = [(a, t) for t in preset.targets for a in preset.architectures]
    for arch, target in tqdm(jobs, desc=f"scratch [{preset.name}]", disable=not progress):
        out = run_dir / "scratch" / arch / f"{target}.msgpack"
        if (arch, target) in done and out.is_file():
            continue
        ds = data[target]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(
            model, _key(preset.seed, arch, "scratch", target), image_size=ds.image_size
        )
        prefix = run_dir / "ckpt" / "scratch" / arch / target
        res = grid_search(
            model, variables, ds, learning_rates=preset.scratch_lrs, config=preset.scratch,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/scratch->{target}",
        )  # fmt: skip
        meta = {
            "architecture": arch, "target": target, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "train_images": len(ds.train),
            "test_accuracy": res.test_accuracy, "lr": res.lr, "epochs": res.epochs,
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        row = {
            "architecture": arch, "target": target, "accuracy": _fmt(res.test_accuracy),
            "lr": _fmt(res.lr), "epochs": res.epochs, "seconds": _fmt(round(res.seconds, 2)),
        }  # fmt: skip
        _append_csv(scratch_csv, SCRATCH_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info(
            "scratch %s %s: test %.2f%% lr %g (%.1fs)",
            arch, target, res.test_accuracy, res.lr, res.seconds,
        )  # fmt: skip

    oracle_csv = run_dir / "oracle.csv"
    grid_csv = run_dir / "grid.csv"
    done3 = {(r["architecture"], r["source"], r["target"]) for r in read_csv(oracle_csv)}
    transfers = preset.transfers()
    for arch, source, target in tqdm(
        transfers, desc=f"transfers [{preset.name}]", disable=not progress
    ):
        if (arch, source, target) in done3:
            continue
        src_path = run_dir / "sources" / arch / f"{source}.msgpack"
        if not src_path.is_file():
            raise ValueError(f"run_dir: missing source model {src_path}; run the sources stage")
        source_vars, _ = load_variables(src_path)
        ds = data[target]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = new_head(
            model, source_vars, _key(preset.seed, arch, source, target),
            image_size=ds.image_size,
        )  # fmt: skip
        prefix = run_dir / "ckpt" / "transfers" / arch / f"{source}__{target}"
        res = grid_search(
            model, variables, ds, learning_rates=preset.finetune_lrs, config=preset.finetune,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/{source}->{target}",
        )  # fmt: skip
        rows = [
            r for r in read_csv(grid_csv)
            if (r["architecture"], r["source"], r["target"]) != (arch, source, target)
        ]  # fmt: skip
        rows += [
            {"architecture": arch, "source": source, "target": target, "lr": _fmt(lr),
             "val_accuracy": _fmt(acc)}
            for lr, acc in res.val_accuracies.items()
        ]  # fmt: skip
        write_csv(grid_csv, GRID_COLUMNS, rows)
        row = {
            "architecture": arch, "source": source, "target": target,
            "accuracy": _fmt(res.test_accuracy), "lr": _fmt(res.lr), "epochs": res.epochs,
            "seconds": _fmt(round(res.seconds, 2)),
        }  # fmt: skip
        _append_csv(oracle_csv, ORACLE_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info(
            "transfer %s %s->%s: test %.2f%% lr %g (%.1fs)",
            arch, source, target, res.test_accuracy, res.lr, res.seconds,
        )  # fmt: skip
    return read_csv(oracle_csv)


STAGES = ("sources", "transfers", "probes")


def stage_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry of one pipeline stage (``sources``, ``transfers``, ``probes``, or
    ``all``); used by the thin drivers in ``scripts/``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description=f"parc_jax ground truth: {stage} stage (resumable)."
    )
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument(
        "--run-dir", default=None, help="output folder (default runs/groundtruth/<preset>)"
    )
    parser.add_argument("--data-dir", default=None, help="dataset folder (default ../shared/data)")
    parser.add_argument(
        "--grid", default="auto", choices=("auto", "loop", "vmap"),
        help="learning-rate grid as a loop over one compiled step (CPU default) or vmapped "
        "(GPU default)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--compile-cache", default="runs/jax_cache",
        help="JAX persistent compilation cache folder ('' to disable)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    run_dir = Path(args.run_dir or Path("runs") / "groundtruth" / preset.name)
    try:
        check_run_dir(preset, run_dir)  # before anything is written into another preset's dir
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (run_dir / "logs").mkdir(exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.FileHandler(run_dir / "logs" / f"{stage}.log"),
        logging.StreamHandler(sys.stderr),
    ]
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    progress = not args.no_progress
    kw = {"progress": progress, "data_dir": args.data_dir}
    stages = STAGES if stage == "all" else (stage,)
    try:
        _run_stages(stages, preset, run_dir, grid=args.grid, **kw)
    except ValueError as e:  # bad input or a missing earlier stage: one line, exit 2
        log.debug("stage failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _run_stages(stages, preset, run_dir, *, grid, progress, data_dir) -> None:
    kw = {"progress": progress, "data_dir": data_dir}
    for st in stages:
        log.info("stage %s, preset %s, run dir %s", st, preset.name, run_dir)
        if st == "sources":
            train_sources(preset, run_dir, grid=grid, **kw)
        elif st == "transfers":
            run_transfers(preset, run_dir, grid=grid, **kw)
        elif st == "probes":
            from parc_jax.probes import write_probe_banks

            t0 = time.perf_counter()
            try:
                write_probe_banks(preset, run_dir, **kw)  # records its time when it finishes
            except BaseException:  # ... and an interrupted segment is added here
                with contextlib.suppress(Exception):
                    record_stage_time(run_dir, "probes", time.perf_counter() - t0)
                raise
        else:
            raise ValueError(f"stage must be one of {STAGES} or 'all', got {st!r}")


# ---------------------------------------------------------------------------------------------
# Report: sanity checks and tables for the benchmark note


def chance_rates(preset: Preset, *, data_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Per target, the accuracy (%) of always predicting the test split's majority class."""
    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    return {
        t: float(100.0 * np.bincount(d.test.labels).max() / len(d.test)) for t, d in data.items()
    }


def summarize(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    flat_spread: float = 1.0,
) -> dict[str, Any]:
    """Sanity checks of a finished run, as numbers and a markdown note.

    Per target: the majority-class rate, each architecture's fine-tuned accuracies over
    sources (min / mean / max), the from-scratch accuracy, how many transfers beat scratch,
    the spread (max - min) of all its transfers, and flags: a transfer not above the majority
    rate, or a spread under ``flat_spread`` points (little signal for correlations).
    Returns ``{"targets": {...}, "flags": [...], "markdown": str}``.
    """
    import json

    run_dir = Path(run_dir)
    oracle = read_csv(run_dir / "oracle.csv")
    scratch = {(r["architecture"], r["target"]): float(r["accuracy"])
               for r in read_csv(run_dir / "scratch.csv")}  # fmt: skip
    sources = read_csv(run_dir / "sources.csv")
    majority = chance_rates(preset, data_dir=data_dir)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    flags: list[str] = []
    targets: dict[str, Any] = {}
    lines = [
        f"## Ground truth, preset `{preset.name}`",
        "",
        f"{len(oracle)} transfers ({len(preset.transfers())} planned), "
        f"{len(sources)} source models, {len(scratch)} from-scratch baselines.",
        "",
        "Wall time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(timings.items()))
        + (f"; total {sum(timings.values()):.0f}" if timings else ""),
        "",
        "### Fine-tuned test accuracy per target (%)",
        "",
        "Per architecture: min / mean / max over sources, then from scratch (s). "
        "`beats scratch`: transfers above the same architecture trained from scratch.",
        "",
        "| target | majority | " + " | ".join(preset.architectures)
        + " | spread | beats scratch |",
        "|---|---|" + "---|" * len(preset.architectures) + "---|---|",
    ]  # fmt: skip
    for target in preset.targets:
        rows = [r for r in oracle if r["target"] == target]
        if not rows:
            continue
        accs = np.array([float(r["accuracy"]) for r in rows])
        wins = sum(
            float(r["accuracy"]) > scratch.get((r["architecture"], target), np.inf) for r in rows
        )
        spread = float(accs.max() - accs.min())
        cells = []
        per_arch = {}
        for arch in preset.architectures:
            a = np.array([float(r["accuracy"]) for r in rows if r["architecture"] == arch])
            s = scratch.get((arch, target))
            per_arch[arch] = {
                "min": float(a.min()) if a.size else None,
                "mean": float(a.mean()) if a.size else None,
                "max": float(a.max()) if a.size else None,
                "scratch": s,
            }
            cell = f"{a.min():.1f} / {a.mean():.1f} / {a.max():.1f}" if a.size else "-"
            cells.append(cell + (f" (s {s:.1f})" if s is not None else ""))
        below = [r for r in rows if float(r["accuracy"]) <= majority[target]]
        if below:
            flags.append(
                f"{target}: {len(below)} transfers not above the majority rate "
                f"{majority[target]:.1f}%"
            )
        if spread < flat_spread:
            flags.append(
                f"{target}: all transfers within {spread:.2f} points; little signal for correlation"
            )
        targets[target] = {
            "majority": majority[target], "transfers": len(rows), "spread": spread,
            "beats_scratch": int(wins), "per_architecture": per_arch,
        }  # fmt: skip
        lines.append(
            f"| {target} | {majority[target]:.1f} | " + " | ".join(cells)
            + f" | {spread:.1f} | {wins}/{len(rows)} |"
        )  # fmt: skip
    total_wins = sum(t["beats_scratch"] for t in targets.values())
    most = sum(t["beats_scratch"] > t["transfers"] / 2 for t in targets.values())
    best = 0
    for t in targets.values():
        pa = [v for v in t["per_architecture"].values() if v["scratch"] is not None and v["max"]]
        t["best_beats_scratch"] = sum(v["max"] > v["scratch"] for v in pa)
        best += t["best_beats_scratch"] > len(pa) / 2
    lines += [
        "",
        f"Fine-tuning beats training from scratch in {total_wins}/{len(oracle)} transfers; "
        f"on {most}/{len(targets)} targets for the majority of their transfers; with the best "
        f"source per architecture, on {best}/{len(targets)} targets for most architectures.",
        "",
        "### Source models (test accuracy %, on their own test split)",
        "",
        "| architecture | " + " | ".join(preset.sources) + " |",
        "|---|" + "---|" * len(preset.sources),
    ]
    for arch in preset.architectures:
        acc = {r["source"]: float(r["test_accuracy"]) for r in sources
               if r["architecture"] == arch}  # fmt: skip
        lines.append(
            f"| {arch} | " + " | ".join(f"{acc[s]:.1f}" if s in acc else "-"
                                        for s in preset.sources) + " |"
        )  # fmt: skip
    lines += ["", "### Flags", ""] + ([f"- {f}" for f in flags] or ["- none"])
    return {"targets": targets, "flags": flags, "markdown": "\n".join(lines) + "\n"}


def measure_throughput(
    architecture: str,
    *,
    image_size: int,
    width: int,
    head_width: int,
    batch_size: int,
    eval_batch_size: int = 256,
    steps: int = 20,
) -> dict[str, float]:
    """Images per second of one training step and of inference for a zoo model (this host).

    Uses the same compiled step as :func:`train` on random inputs; returns ``train_ips``,
    ``eval_ips`` and the first-call (compile) seconds of each.
    """
    from parc_jax.zoo import make_model

    model = make_model(architecture, num_classes=head_width, width=width)
    variables = init_variables(model, 0, image_size=image_size)
    opt = _Opt(0.9, 5e-4)
    state = init_state(variables, lr=0.01, total_steps=10 * steps, warmup_steps=0, opt=opt)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, size=batch_size), jnp.int32)
    mask = jnp.asarray(class_mask(2, head_width))
    t = time.perf_counter()
    state, loss = _train_step(state, x, y, mask, model=model, opt=opt)
    loss.block_until_ready()
    compile_train = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        state, loss = _train_step(state, x, y, mask, model=model, opt=opt)
    loss.block_until_ready()
    train_ips = steps * batch_size / (time.perf_counter() - t)
    xe = jnp.zeros((eval_batch_size, image_size, image_size, 3), jnp.float32)
    v = state_variables(state)
    t = time.perf_counter()
    jax.block_until_ready(_eval_step(v, xe, model=model))
    compile_eval = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        out = _eval_step(v, xe, model=model)
    jax.block_until_ready(out)
    eval_ips = steps * eval_batch_size / (time.perf_counter() - t)
    return {
        "train_ips": train_ips,
        "eval_ips": eval_ips,
        "compile_train_s": compile_train,
        "compile_eval_s": compile_eval,
    }


def preset_workload(
    preset: Preset, *, data_dir: str | os.PathLike | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Images each stage pushes through one architecture: ``{stage: {"train": n, "eval": n}}``.

    Counts training images (steps x batch, all grid members) and evaluated images (validation
    of every member, test of the best, probe extraction), from the actual split sizes.
    """
    src = stage_datasets(preset, preset.sources, role="source", data_dir=data_dir)
    tgt = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)

    def trained(cfg: TrainConfig, n: int, members: int) -> int:
        epochs, steps, batch = cfg.plan(n)
        return members * epochs * steps * batch

    def evals(ds: Dataset, members: int) -> int:
        return members * len(ds.val) + len(ds.test)

    out = {
        "sources": {
            "train": sum(trained(preset.source, len(d.train), 1) for d in src.values()),
            "eval": sum(evals(d, 1) for d in src.values()),
        },
        "scratch": {
            "train": sum(
                trained(preset.scratch, len(d.train), len(preset.scratch_lrs)) for d in tgt.values()
            ),
            "eval": sum(evals(d, len(preset.scratch_lrs)) for d in tgt.values()),
        },
        "transfers": {"train": 0, "eval": 0},
        "probes": {"train": 0, "eval": 0},
    }
    k = len(preset.finetune_lrs)
    for arch, _source, t in preset.transfers():
        if arch == preset.architectures[0]:
            out["transfers"]["train"] += trained(preset.finetune, len(tgt[t].train), k)
            out["transfers"]["eval"] += evals(tgt[t], k)
    for t, d in tgt.items():
        n_models = sum(s != t for s in preset.sources) + 1
        out["probes"]["eval"] += n_models * min(len(d.train), preset.probe_runs * preset.probe_size)
    return out

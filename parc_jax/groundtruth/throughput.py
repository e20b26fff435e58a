"""Training and evaluation throughput of the zoo, and a preset's workload: predicts a pipeline's
wall time before it runs."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from parc_jax.groundtruth.data import Dataset
from parc_jax.groundtruth.pipeline import stage_datasets
from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import (
    TrainConfig,
    _eval_step,
    _Opt,
    _train_step,
    class_mask,
    class_weights,
    init_state,
    state_variables,
)
from parc_jax.groundtruth.zoo import init_variables


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
    from parc_jax.groundtruth.zoo import make_model

    model = make_model(architecture, num_classes=head_width, width=width)
    variables = init_variables(model, 0, image_size=image_size)
    opt = _Opt(0.9, 5e-4)
    state = init_state(variables, lr=0.01, total_steps=10 * steps, warmup_steps=0, opt=opt)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, size=batch_size), jnp.int32)
    mask = jnp.asarray(class_mask(2, head_width))
    weights = jnp.asarray(class_weights(np.asarray(y), head_width, balanced=False))
    t = time.perf_counter()
    state, loss = _train_step(state, x, y, mask, weights, model=model, opt=opt)
    loss.block_until_ready()
    compile_train = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        state, loss = _train_step(state, x, y, mask, weights, model=model, opt=opt)
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

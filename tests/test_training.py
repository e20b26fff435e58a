"""Training: schedule, masking, determinism, resume, loop == vmap grid, fine-tuning heads.

One small model (AlexNet-style, width 4, 12-wide head, 16x16) and one batch size keep the
compiled programs few.
"""

import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parc_jax.groundtruth import main as gt_main
from parc_jax.groundtruth import pipeline, presets
from parc_jax.groundtruth import train as tr
from parc_jax.groundtruth.data import default_data_dir, load_dataset
from parc_jax.groundtruth.zoo import init_variables, make_model

pytestmark = pytest.mark.skipif(
    not (default_data_dir() / "usps.npz").is_file(), reason="needs ../shared/data"
)

MODEL = make_model("alexnet", num_classes=12, width=4)
CFG = tr.TrainConfig(epochs=2, batch_size=64, warmup_fraction=0.1, eval_batch_size=128)


@pytest.fixture(scope="module")
def usps():
    return load_dataset("usps", image_size=16, max_train=512, max_val=128, max_test=256, seed=0)


def _leaves(v):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(v)]


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def test_schedule_warmup_then_cosine():
    total, warm = 100, 10
    steps = jnp.arange(total)
    got = np.asarray(tr.schedule_factor(steps, jnp.asarray(total), jnp.asarray(warm)))
    ref = [
        (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
        for s in range(total)
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got[warm] == pytest.approx(1.0) and got[-1] < 1e-2


def test_masked_classes_get_no_probability_or_gradient():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
    mask = jnp.asarray(tr.class_mask(4, 6))
    y = jnp.asarray([0, 1, 2, 3])

    def loss(lo):
        return optax.softmax_cross_entropy_with_integer_labels(tr.masked_logits(lo, mask), y).mean()

    g = np.asarray(jax.grad(loss)(logits))
    assert np.all(g[:, 4:] == 0.0)
    p = np.asarray(jax.nn.softmax(tr.masked_logits(logits, mask)))
    assert np.all(p[:, 4:] == 0.0)
    ref = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits[:, :4], y).mean())
    np.testing.assert_allclose(float(loss(logits)), ref, rtol=1e-6)
    with pytest.raises(ValueError, match="head width"):
        tr.class_mask(7, 6)


def test_weight_decay_spares_biases_and_norms():
    variables = init_variables(MODEL, 0, image_size=16)
    mask = tr._decay_mask(variables["params"])
    flat = jax.tree_util.tree_leaves_with_path(mask)
    for path, decayed in flat:
        name = jax.tree_util.keystr(path)
        assert decayed == name.endswith("['kernel']"), name


def test_plan_raises_epochs_for_min_steps():
    cfg = tr.TrainConfig(epochs=2, batch_size=64, min_steps=50)
    assert cfg.plan(300) == (13, 4, 64)
    assert cfg.plan(10_000) == (2, 156, 64)
    assert tr.TrainConfig(batch_size=64).plan(40)[2] == 40
    with pytest.raises(ValueError, match="batch_size"):
        tr.TrainConfig(batch_size=0)


def test_training_learns_deterministically(usps):
    v0 = init_variables(MODEL, 1, image_size=16)
    cfg = tr.TrainConfig(epochs=4, batch_size=64, warmup_fraction=0.1)
    kw = dict(num_classes=10, learning_rates=[0.1], config=cfg, seed=0, progress=False)
    a = tr.train(MODEL, v0, usps.train, **kw)[0]
    b = tr.train(MODEL, v0, usps.train, **kw)[0]
    c = tr.train(MODEL, v0, usps.train, **{**kw, "seed": 1})[0]
    assert _equal(a, b)
    assert not _equal(a, c)
    assert "batch_stats" in a and not _equal(a["batch_stats"], v0["batch_stats"])
    acc = tr.accuracy(MODEL, a, usps.test, num_classes=10)
    assert acc > 50.0  # chance is ~10-18%; 32 steps on 512 images (measured ~70%)


def test_resume_after_interruption_gives_same_result(usps, tmp_path, monkeypatch):
    v0 = init_variables(MODEL, 2, image_size=16)
    kw = dict(num_classes=10, learning_rates=[0.05], config=CFG, seed=0, progress=False)
    full = tr.train(MODEL, v0, usps.train, **kw)[0]

    real_save = tr.save_checkpoint
    calls = []

    def save_then_die(path, state, *, epoch):
        real_save(path, state, epoch=epoch)
        calls.append(epoch)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(tr, "save_checkpoint", save_then_die)
    prefix = tmp_path / "ck" / "run"
    with pytest.raises(KeyboardInterrupt):
        tr.train(MODEL, v0, usps.train, checkpoint=prefix, **kw)
    monkeypatch.setattr(tr, "save_checkpoint", real_save)
    assert calls == [1]
    assert (
        tr.load_checkpoint(
            str(prefix) + ".lr0.ckpt",
            tr.init_state(v0, lr=0.05, total_steps=1, warmup_steps=0, opt=tr._Opt(0.9, 5e-4)),
        )[1]
        == 1
    )
    resumed = tr.train(MODEL, v0, usps.train, checkpoint=prefix, **kw)[0]
    for x, y in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    tr.remove_checkpoints(prefix)
    assert not list((tmp_path / "ck").iterdir())


def test_vmapped_grid_matches_loop(usps):
    v0 = init_variables(MODEL, 3, image_size=16)
    cfg = tr.TrainConfig(epochs=1, batch_size=64)
    kw = dict(num_classes=10, learning_rates=[0.01, 0.1], config=cfg, seed=0, progress=False)
    loop = tr.train(MODEL, v0, usps.train, grid="loop", **kw)
    vm = tr.train(MODEL, v0, usps.train, grid="vmap", **kw)
    for a, b in zip(loop, vm, strict=True):
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-4)
    assert not _equal(loop[0], loop[1])


def test_grid_search_picks_best_validation(usps):
    v0 = init_variables(MODEL, 4, image_size=16)
    lrs = (0.001, 0.05)
    res = tr.grid_search(MODEL, v0, usps, learning_rates=lrs, config=CFG, seed=0, progress=False)
    assert set(res.val_accuracies) == set(lrs)
    assert res.val_accuracies[res.lr] == max(res.val_accuracies.values())
    again = tr.accuracy(MODEL, res.variables, usps.test, num_classes=10)
    assert res.test_accuracy == pytest.approx(again)
    assert res.epochs == 2 and res.seconds > 0


def test_new_head_keeps_body_and_replaces_head(tmp_path):
    src = init_variables(MODEL, 5, image_size=16)
    out = tr.new_head(MODEL, src, 6, image_size=16)
    for k in src["params"]:
        same = _equal(src["params"][k], out["params"][k])
        assert same == (k != "head"), k
    assert _equal(src["batch_stats"], out["batch_stats"])
    wider = make_model("alexnet", num_classes=20, width=4)
    assert tr.new_head(wider, src, 6, image_size=16)["params"]["head"]["kernel"].shape[1] == 20
    with pytest.raises(ValueError, match="same architecture"):
        tr.new_head(make_model("alexnet", num_classes=12, width=8), src, 6, image_size=16)
    tr.save_variables(tmp_path / "v.msgpack", out, {"depth": 8, "name": "x"})
    back, meta = tr.load_variables(tmp_path / "v.msgpack")
    assert _equal(out, back) and meta == {"depth": 8, "name": "x"}


def test_extract_pads_batches(usps):
    v = init_variables(MODEL, 7, image_size=16)
    x = usps.test.images[:70]
    feats, logits = tr.predict(MODEL, v, x, batch_size=32)
    f2, l2 = MODEL.apply(v, jnp.asarray(x), train=False)
    np.testing.assert_allclose(feats, np.asarray(f2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits, np.asarray(l2), rtol=1e-4, atol=1e-5)


def test_bad_train_arguments(usps):
    v = init_variables(MODEL, 0, image_size=16)
    kw = dict(config=CFG, seed=0, progress=False)
    with pytest.raises(ValueError, match="learning_rates"):
        tr.train(MODEL, v, usps.train, num_classes=10, learning_rates=[], **kw)
    with pytest.raises(ValueError, match="learning_rates"):
        tr.train(MODEL, v, usps.train, num_classes=10, learning_rates=[-1.0], **kw)
    with pytest.raises(ValueError, match="labels"):
        tr.train(MODEL, v, usps.train, num_classes=5, learning_rates=[0.1], **kw)
    with pytest.raises(ValueError, match="head width"):
        tr.train(MODEL, v, usps.train, num_classes=13, learning_rates=[0.1], **kw)
    with pytest.raises(ValueError, match="grid"):
        tr.train(MODEL, v, usps.train, num_classes=10, learning_rates=[0.1], grid="pmap", **kw)
    with pytest.raises(ValueError, match="preset"):
        presets.get_preset("huge")


def test_run_dir_records_its_preset_and_refuses_another(tmp_path):
    tiny, mini = presets.get_preset("tiny"), presets.get_preset("mini")
    pipeline.check_run_dir(tiny, tmp_path)  # first use: the record is written
    assert (tmp_path / "preset.json").is_file()
    pipeline.check_run_dir(tiny, tmp_path)  # same preset: accepted
    with pytest.raises(ValueError, match="made with preset tiny.*use another --run-dir"):
        pipeline.check_run_dir(mini, tmp_path)
    with pytest.raises(ValueError, match="made with preset tiny"):
        pipeline.train_sources(mini, tmp_path, progress=False)
    changed = dataclasses.replace(tiny, finetune_lrs=(0.1,))  # same name, another recipe
    with pytest.raises(ValueError, match="finetune_lrs"):
        pipeline.run_transfers(changed, tmp_path, progress=False)
    argv = ["--preset", "mini", "--run-dir", str(tmp_path), "--no-progress", "--compile-cache", ""]
    assert gt_main.stage_main("sources", argv) == 2
    old = tmp_path / "old"  # an older run dir without the record: accepted, record written
    old.mkdir()
    (old / "sources.csv").write_text("architecture,source\n")
    pipeline.check_run_dir(mini, old)
    assert '"mini"' in (old / "preset.json").read_text()


def test_interrupted_stage_time_is_recorded(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "stage_datasets", interrupted)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            pipeline.train_sources(presets.get_preset("tiny"), tmp_path, progress=False)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["pretrain"] >= 0.1  # tiny pretrains on its pool first


def _summarize_script():
    spec = importlib.util.spec_from_file_location(
        "summarize_groundtruth", Path(__file__).parents[1] / "scripts" / "summarize_groundtruth.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summarize(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["summarize_groundtruth.py", "--preset", "tiny", *args])
    try:
        return _summarize_script().main()
    except SystemExit as e:
        return e.code


def _fake_run(run_dir, n=3):
    run_dir.mkdir()
    preset = presets.get_preset("tiny")
    rows = [{"architecture": a, "source": s, "target": t, "accuracy": "50", "lr": "0.1",
             "epochs": 4, "seconds": "1"} for a, s, t in preset.transfers()[:n]]  # fmt: skip
    pipeline.write_csv(run_dir / "oracle.csv", pipeline.ORACLE_COLUMNS, rows)
    for name, cols in (("sources.csv", pipeline.SOURCES_COLUMNS),
                       ("scratch.csv", pipeline.SCRATCH_COLUMNS),
                       ("grid.csv", pipeline.GRID_COLUMNS)):  # fmt: skip
        pipeline.write_csv(run_dir / name, cols, [])
    (run_dir / "timings.json").write_text("{}\n")


def test_summarize_refuses_missing_or_empty_run_dirs(tmp_path, monkeypatch, capsys):
    assert _summarize(monkeypatch, "--run-dir", str(tmp_path / "nonexistent")) == 2
    assert "nonexistent" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _summarize(monkeypatch, "--run-dir", str(tmp_path / "empty")) == 2
    assert "no transfers" in capsys.readouterr().err
    _fake_run(tmp_path / "run")
    assert _summarize(monkeypatch, "--run-dir", str(tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "3 of 12" in err


def test_summarize_export_is_all_or_nothing(tmp_path, monkeypatch, capsys):
    _fake_run(tmp_path / "run")  # CSVs but no probes/
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("old\n")
    assert _summarize(monkeypatch, "--run-dir", str(tmp_path / "run"), "--export", str(out)) == 2
    assert "probe bank" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["summary.md"]
    assert (out / "summary.md").read_text() == "old\n"

"""The engine and the Python API: batched scores equal per-model scores, padding and bucketing
change nothing, chunks compile once, depth prior, score spread, method resolution, sharding."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from toybank import K
from toybank import toy_bank as _bank

from parc_jax import engine, reference
from parc_jax.api import ScoreResult, probe_subsample, score_bank
from parc_jax.bank import Bank, ModelEntry, Target, write_bank
from parc_jax.defaults import SORT_BY
from parc_jax.scorers.logistic import stratified_half
from parc_jax.scorers.registry import BANK_LEVEL, PROBS, SCORERS

# "all": the default sort first (defaults.SORT_BY), then the registry's order
ALL = [SORT_BY, *(m for m in [*SCORERS, *BANK_LEVEL] if m != SORT_BY)]


@pytest.fixture(scope="module")
def bank() -> Bank:
    return _bank()


@pytest.fixture(scope="module")
def result(bank) -> ScoreResult:
    return score_bank(bank, methods="all", chunk_size=2, progress=False)


def _expected(method: str, model: ModelEntry, target: Target) -> float:
    spec = SCORERS[method]
    dims = spec.default_dims if spec.reduces else None
    if method == "etran":  # raw features in, its LDA part reduced at its own default
        dims = spec.fn.__kwdefaults__["n_dims"]
    y = target.labels
    x = model.features.astype(np.float64)
    if method == "heuristic":
        return reference.heuristic(model.depth, model.source_images, target.num_images)
    if PROBS in spec.inputs:
        return getattr(reference, method)(model.probs, y, num_classes=K)
    if method in ("rsa", "dds"):
        ref = target.reference_for(model.architecture)
        return getattr(reference, method)(x, ref, n_dims=dims)
    if method == "logistic":
        return reference.logistic(x, y, num_classes=K, train_mask=stratified_half(y), n_dims=dims)
    return getattr(reference, method)(x, y, num_classes=K, n_dims=dims)


def test_engine_matches_reference_for_every_scorer(bank, result):
    """Padded, bucketed, chunked scores equal the NumPy reference model by model."""
    assert set(result.methods) == set(ALL)
    for model in bank.models:
        j = result.names.index(model.name)
        for m in SCORERS:
            want = _expected(m, model, bank.target)
            got = float(result.scores[m][j])
            tol = 1e-6 if m == "logistic" else 2e-4
            assert got == pytest.approx(want, rel=tol, abs=tol * 10), (m, model.name)


def test_engine_bank_level_ncti_combines_the_reference_parts(bank, result):
    """ncti over the bank = the published min-max combination of every model's parts."""
    parts, combine = BANK_LEVEL["ncti"]
    order = [result.names.index(m.name) for m in bank.models]
    want = combine(*([_expected(p, m, bank.target) for m in bank.models] for p in parts))
    np.testing.assert_allclose(result.scores["ncti"][order], want, rtol=2e-3, atol=2e-3)


def test_models_keep_bank_identity(bank, result):
    assert sorted(result.names) == sorted(bank.names)
    assert {m["name"]: m["depth"] for m in result.models} == {m.name: m.depth for m in bank.models}


def _traces() -> dict[str, int]:
    """Traces per program: the shared PCA ("reduce") and each method's program."""
    out: dict[str, int] = {}
    for (key, _shapes), count in engine.TRACE_COUNT.items():
        name = key[0]
        out[name] = out.get(name, 0) + count
    return out


def _fresh() -> None:
    """Forget every compiled program of this process, and the trace counts."""
    engine._programs._COMPILED.clear()
    engine._programs._EXECUTABLES.clear()
    engine.TRACE_COUNT.clear()


def test_second_chunk_does_not_recompile():
    """Six same-width models in chunks of 2 = three chunks, one trace per program."""
    b = _bank(6, widths=(20,), seed=1)
    _fresh()  # earlier tests may have compiled these programs already
    score_bank(b, methods=["parc", "knn"], chunk_size=2, progress=False)
    assert _traces() == {"reduce": 1, "parc": 1, "knn": 1}
    # a bigger bank of the same bucket reuses the compiled function: no new trace at all
    score_bank(_bank(10, widths=(18,), seed=2), methods=["parc", "knn"], chunk_size=2,
               progress=False)  # fmt: skip
    assert _traces() == {"reduce": 1, "parc": 1, "knn": 1}


def test_a_probe_with_another_training_half_size_recompiles_only_logistic():
    """Regression: logistic's training rows (their count n_t is a shape, and it differs
    between probe samples) went to every method's program, so every method recompiled for
    every probe sample (a selection benchmark over 40 probe banks ran out of memory maps)."""
    from parc_jax.scorers.logistic import stratified_half

    b = _bank(4, widths=(40,), seed=3)
    y = np.asarray(b.target.labels)
    moved = y.copy()
    moved[np.flatnonzero(y == y[0])[0]] = y[-1]  # one image to another class: another n_t
    assert stratified_half(moved).sum() != stratified_half(y).sum()
    other = Bank(dataclasses.replace(b.target, labels=moved), b.models)
    _fresh()
    methods = ["parc", "hscore", "logistic"]
    score_bank(b, methods=methods, chunk_size=2, progress=False)
    before = _traces()
    score_bank(other, methods=methods, chunk_size=2, progress=False)
    after = _traces()
    assert after["parc"] == before["parc"] and after["hscore"] == before["hscore"]
    assert after["logistic"] == before["logistic"] + 1


def test_one_pca_per_chunk_serves_every_width_bucket_and_method():
    """Two width buckets (64, 128): the shared PCA compiles per bucket, while the methods,
    seeing 32- and 64-wide reduced features whatever the bucket, compile once each; the
    scores equal the scorers run one by one on each model."""
    b = _bank(4, widths=(40, 100), seed=3)
    _fresh()
    methods = ["parc", "hscore", "gbc", "rsa"]
    res = score_bank(b, methods=methods, chunk_size=2, progress=False)
    assert _traces() == {"reduce": 3, "parc": 1, "hscore": 1, "gbc": 1, "rsa": 1}  # +1: refs
    refs = b.target.references()
    ref_width = engine.bucket_width(max(r.shape[1] for r in refs))

    def padded(x, width):  # as the engine pads: a float rounding apart from unpadded
        return np.pad(x, ((0, 0), (0, width - x.shape[1]))), np.arange(width) < x.shape[1]

    for m in methods:
        spec = SCORERS[m]
        for model in b.models:
            x, mask = padded(model.features, engine.bucket_width(model.features.shape[1]))
            if m == "rsa":
                r, rmask = padded(b.target.reference_for(model.architecture), ref_width)
                want = spec.fn(x, r, feature_mask=mask, reference_mask=rmask)
            else:
                want = spec.fn(x, b.target.labels, feature_mask=mask, num_classes=K)
            got = res.scores[m][res.names.index(model.name)]
            # Batched and unbatched eigh round differently, and rank statistics swap near-tied
            # pairs on that wobble: up to 4e-4 (x100 units, rsa near 0) here, as before the
            # PCA was shared (measured: identical engine scores before and after).
            tol = dict(abs=1e-3) if m in ("parc", "rsa") else dict(rel=1e-5, abs=1e-6)
            assert float(got) == pytest.approx(float(want), **tol), (m, model.name)


@pytest.mark.parametrize("distinct", [1, 2])
def test_a_single_reference_is_ranked_once_per_chunk_not_per_model(distinct):
    """rsa's program gets the target's reduced references as a table: with one reference for
    every model it stays unbatched under vmap, so its distances are ranked by one sort for the
    whole chunk (with several, each model gathers its own and sorts it)."""
    import jax
    import jax.numpy as jnp
    from jaxprs import equations

    b, n, f = 3, 12, 5
    x = {
        "features": jnp.zeros((b, n, f)),
        "feature_mask": jnp.ones((b, f), bool),
        "reference_index": jnp.zeros(b, jnp.int32),
    }
    shared = {
        "reference_table": jnp.zeros((distinct, n, f)),
        "reference_valid": jnp.ones((distinct, f), bool),
    }
    args = (x, shared, jnp.zeros(n, jnp.int32), jnp.zeros(n, bool), np.float32(0))
    closed = jax.make_jaxpr(engine._programs._method_fn("rsa", K))(*args)
    eqns = [e for e, _ in equations(closed.jaxpr)]
    sorts = [e.invars[0].aval.shape for e in eqns if e.primitive.name == "sort"]
    pairs = n * (n - 1) // 2
    # one sort per ranked side (in each per-platform branch of the rank step)
    batched, unbatched = sorts.count((b, pairs)), sorts.count((pairs,))
    assert batched > 0 and batched + unbatched == len(sorts), sorts
    assert unbatched == (batched if distinct == 1 else 0), sorts


def test_a_non_finite_score_is_flagged_never_silent(bank):
    """A NaN no degeneracy rule explains is reported as a numerical failure, naming a model;
    its depth-prior column is flagged too."""
    from parc_jax.api import _narrow, _target_info, degenerate_flags

    kept = [_narrow(m) for m in bank.models[:3]]
    scores = {"parc": np.array([1.0, np.nan, 2.0]), "parc+l": np.array([0.1, np.nan, 0.2]),
              "knn": np.array([50.0, 60.0, 70.0])}  # fmt: skip
    flags = degenerate_flags(kept, _target_info(bank.target), {"parc": 32, "knn": None}, scores)
    assert set(flags) == {"parc", "parc+l"}
    assert "not finite for 1 of 3" in flags["parc"] and repr(kept[1].name) in flags["parc"]


def test_bucket_width_ladder():
    assert engine.bucket_width(1) == 8
    assert engine.bucket_width(512) == 512
    assert engine.bucket_width(513) == 768
    assert engine.bucket_width(4096) == 4096
    assert engine.bucket_width(5000) == 8192


def test_float16_bank_matches_float32(bank):
    b16 = Bank(
        bank.target,
        [
            ModelEntry(m.name, m.features.astype(np.float16), m.architecture, m.probs, m.depth,
                       m.source, m.source_images)
            for m in bank.models
        ],
    )  # fmt: skip
    r16 = score_bank(b16, methods=["parc"], chunk_size=2, progress=False)
    for m in b16.models:
        want = reference.parc(m.features.astype(np.float64), bank.target.labels, num_classes=K)
        assert float(r16.scores["parc"][r16.names.index(m.name)]) == pytest.approx(want, rel=2e-4)


def test_depth_prior(bank, result):
    prior = score_bank(bank, methods=["parc", "logme"], depth_prior=True, l_max=20.0,
                       chunk_size=2, progress=False)  # fmt: skip
    assert prior.methods == ["parc", "logme", "parc+l", "logme+l"]
    depths = np.array([m["depth"] for m in prior.models], float)
    for m in ("parc", "logme"):
        want = reference.depth_prior(prior.scores[m].astype(np.float64), depths, l_max=20.0)
        np.testing.assert_allclose(prior.scores[m + "+l"], want, rtol=1e-5, atol=1e-5)
    assert prior.provenance["parameters"]["parc"] == {"n_dims": 32, "l_max": 20.0}


def test_depth_prior_needs_depths(bank):
    no_depth = Bank(
        bank.target,
        [ModelEntry(m.name, m.features, m.architecture) for m in bank.models],
    )
    with pytest.raises(ValueError, match="depth"):
        score_bank(no_depth, methods=["parc"], depth_prior=True, progress=False)


def test_methods_all_skips_what_the_bank_cannot_support(bank):
    bare = Bank(
        Target("bare", bank.target.labels, K),
        [ModelEntry(m.name, m.features, m.architecture) for m in bank.models],
    )
    res = score_bank(bare, methods=["parc", "knn"], chunk_size=2, progress=False)
    assert res.skipped == {}
    _, skipped = engine.resolve_methods("all", engine.TargetInfo("bare", bank.target.labels, K))
    assert {"rsa", "dds", "heuristic"} <= set(skipped)
    with pytest.raises(ValueError, match="leep cannot run on this bank: .*probs"):
        score_bank(bare, methods=["leep"], progress=False)
    with pytest.raises(ValueError, match="unknown scorer"):
        score_bank(bare, methods=["parcc"], progress=False)


def test_score_spread_is_seeded_and_sane(bank):
    a = score_bank(bank, methods=["parc"], bootstrap=4, seed=3, chunk_size=2, progress=False)
    b = score_bank(bank, methods=["parc"], bootstrap=4, seed=3, chunk_size=2, progress=False)
    c = score_bank(bank, methods=["parc"], bootstrap=4, seed=4, chunk_size=2, progress=False)
    sa, sc = a.spread["parc"], c.spread["parc"]
    np.testing.assert_array_equal(sa["mean"], b.spread["parc"]["mean"])
    assert not np.array_equal(sa["mean"], sc["mean"])
    assert sa["top1"].sum() == pytest.approx(1.0)
    assert np.all(sa["std"] >= 0)
    # the spread is over real resamples: recompute them (same seed, same order) by hand
    rng = np.random.default_rng(3)
    idxs = [probe_subsample(bank.target.labels, 0.8, rng) for _ in range(4)]
    for idx in idxs:
        assert np.all(np.bincount(bank.target.labels[idx], minlength=K) >= 2)
    m0 = bank.models[0]
    boot = [
        reference.parc(m0.features[idx].astype(np.float64), bank.target.labels[idx],
                       num_classes=K)
        for idx in idxs
    ]  # fmt: skip
    j = a.names.index(m0.name)
    assert sa["mean"][j] == pytest.approx(np.mean(boot), rel=2e-4)
    assert sa["std"][j] == pytest.approx(np.std(boot), rel=2e-2, abs=1e-3)


def test_probe_subsample_keeps_two_per_class():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    idx = probe_subsample(labels, 0.5, np.random.default_rng(0))
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [2, 2, 2]  # round(0.5*5)=2 (banker's rounding), mins of 2
    assert len(set(idx.tolist())) == len(idx)


def test_result_rows_and_dict(result):
    rows = result.rows(sort_by="parc", top=3)
    assert len(rows) == 3
    assert [r["rank[parc]"] for r in rows] == [1, 2, 3]
    assert rows[0]["parc"] >= rows[1]["parc"] >= rows[2]["parc"]
    doc = result.to_dict(sort_by="parc")
    json.dumps(doc)  # serialisable
    assert doc["models"][0]["rank"]["parc"] == 1
    assert doc["provenance"]["pca"] == "exact"


def test_path_and_directory_banks_give_the_same_scores(tmp_path, bank):
    write_bank(tmp_path / "bank.msgpack", bank)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_bank(shards / "a.msgpack", Bank(bank.target, bank.models[:2]))
    write_bank(shards / "b.msgpack", Bank(bank.target, bank.models[2:]))
    # the same methods: on the certified exact PCA (accelerators) the method set decides
    # whether the shared PCA runs the iteration or eigh (numerics.EXACT_PCA_SOLVER), which
    # agree to float32 resolution, not to 1e-6
    result = score_bank(bank, methods=["parc", "leep"], chunk_size=2, progress=False)
    for path in (tmp_path / "bank.msgpack", shards):
        res = score_bank(path, methods=["parc", "leep"], chunk_size=2, progress=False)
        assert len(res.provenance["bank_sha256"]) == 64
        for m in ("parc", "leep"):
            got = dict(zip(res.names, res.scores[m]))
            want = dict(zip(result.names, result.scores[m]))
            for name in want:
                assert got[name] == pytest.approx(want[name], rel=1e-6)


def test_bad_options(bank):
    with pytest.raises(ValueError, match="pca"):
        score_bank(bank, methods=["parc"], pca="approx", progress=False)
    with pytest.raises(ValueError, match="n_dims"):
        score_bank(bank, methods=["parc"], n_dims=0, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        score_bank(bank, methods=["parc"], chunk_size=0, progress=False)


SHARDED = textwrap.dedent(
    """
    import json
    import jax
    from parc_jax.api import score_bank
    from parc_jax.synthetic import synthetic_bank
    assert len(jax.devices()) == 8, jax.devices()
    b = synthetic_bank(n=200, num_classes=20, num_models=9, widths=(64, 128), z=30, seed=5,
                       dtype="float16", reference_width=48)
    many = score_bank(b, methods="all", chunk_size=8, progress=False)
    one = score_bank(b, methods="all", chunk_size=8, devices=jax.devices()[:1], progress=False)
    print(json.dumps({{m: [many.scores[m].tolist(), one.scores[m].tolist()]
                      for m in many.methods}} | {{"device": many.provenance["device"]}}))
    """
)


def test_eight_cpu_devices_finish_and_equal_one_device():
    """Eight forced host devices at n = 200, widths 64 and 128, every method: the run finishes
    (sharded over XLA:CPU devices it could wait forever, ``benchmarks/multidevice_hang.py``) and
    equals one device. On the CPU a chunk runs whole on one device (``engine.sharding_mesh``),
    so the programs and their shapes are the same: bitwise equal."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")  # fmt: skip
    code = SHARDED.format()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc.pop("device").startswith("8 x cpu")
    assert set(doc) == set(SCORERS) | set(BANK_LEVEL), sorted(doc)
    for m, (many, one) in doc.items():
        np.testing.assert_array_equal(many, one, err_msg=m)


def test_remainder_chunks_pad_to_powers_of_two():
    assert [engine.remainder_size(c, 64) for c in (1, 2, 3, 5, 17, 33, 64)] == [
        1, 2, 4, 8, 32, 64, 64,
    ]  # fmt: skip
    assert engine.remainder_size(3, 64, multiple=8) == 8  # sharded: whole devices
    assert engine.remainder_size(9, 12, multiple=4) == 12


def test_two_factorisations_per_model_do_not_deadlock_the_cpu_pool():
    """Regression: RSA on a vmapped batch of 4 float16 models (n = 500) hung in 3 of 4 runs on
    2 cores: its two PCAs' batched eigh kernels ran at once and each waited on XLA's intra-op
    pool for work that the other one's thread could not take (``numerics.sequenced``). Run in
    a child so that a hang fails the test instead of freezing the suite."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import numpy as np
        from parc_jax.api import score_bank
        from parc_jax.synthetic import synthetic_bank
        bank = synthetic_bank(num_models=4, n=500, num_classes=20, widths=(128,), seed=0)
        for _ in range(3):
            r = score_bank(bank, methods=["rsa", "dds", "transrate"], chunk_size=4,
                           progress=False)
        print(all(np.isfinite(v).all() for v in r.scores.values()))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("True")


def test_reused_host_buffers_keep_nothing_of_the_last_chunk():
    """A buffer given back holds the last chunk's values; the next chunk written into it must
    overwrite every element (its own columns and the zero padding)."""
    buffers = engine.HostBuffers()
    buffers.give_back({"features": np.full((2, 5, 8), 7.0, np.float32)})
    arrays = [np.ones((5, 3), np.float32), 2 * np.ones((5, 6), np.float32)]
    out = engine._assembly._stack_padded(arrays, 8, np.float32, buffers)
    np.testing.assert_array_equal(out[0], np.pad(arrays[0], ((0, 0), (0, 5))))
    np.testing.assert_array_equal(out[1], np.pad(arrays[1], ((0, 0), (0, 2))))
    # the pool is now empty
    assert engine._assembly._stack_padded(arrays, 8, np.float32, buffers) is not out


def test_prefetch_passes_items_and_errors_and_stops_with_its_consumer():
    """The prefetch thread yields every item in order, re-raises its source's error in the
    consumer, and ends when the consumer stops early instead of blocking on a full queue."""
    import threading
    import time

    prefetch = engine._assembly._prefetch
    assert list(prefetch(iter(range(7)), 2)) == list(range(7))

    def failing():
        yield 1
        raise OSError("bank file vanished")

    with pytest.raises(OSError, match="vanished"):
        list(prefetch(failing(), 2))

    pulled: list[int] = []

    def endless():
        for i in range(10**9):
            pulled.append(i)
            yield np.zeros(4)

    before = threading.active_count()
    stream = prefetch(endless(), 2)
    next(stream)
    stream.close()  # what an error downstream of the consumer's loop leads to
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
    assert len(pulled) <= 5  # the thread stopped at its next item


def test_threaded_assembly_writes_every_model_and_raises_workers_errors(monkeypatch):
    """A large block is split over threads (forced here on a small one): every model lands in
    its own row, padded with zeros over a stale reused buffer, converted to the block's dtype,
    and a worker's error reaches the caller."""
    monkeypatch.setattr(engine._assembly, "ASSEMBLY_THREADS", 3)
    monkeypatch.setattr(engine._assembly, "_BYTES_PER_WORKER", 1)
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(4, w)).astype(np.float32) for w in (3, 8, 1, 5, 8, 2, 7)]
    buffers = engine.HostBuffers()
    buffers.give_back({"features": np.full((7, 4, 8), np.nan, np.float16)})
    out = engine._assembly._stack_padded(arrays, 8, np.float16, buffers)
    assert engine._assembly._assembly_workers() == 3 and out.dtype == np.float16
    want = np.stack([np.pad(a, ((0, 0), (0, 8 - a.shape[1]))) for a in arrays]).astype(np.float16)
    np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="broadcast"):
        engine._assembly._stack_padded(arrays[:6] + [np.ones((3, 2), np.float32)], 8, np.float32)


# --------------------------------------------------------------------------------------------
# Walkthrough defects: repeated methods, degenerate scores and the depth prior / spread,
# undefined rank scores, "all" decided from every model, argument validation.


def _partial_bank(*, probs_on=(0, 1, 2, 3), depth_on=(0, 1, 2, 3), refs=("a", "b")) -> Bank:
    """Four toy models; only those listed carry probs / depth; references for ``refs``."""
    b = _bank(4, widths=(12, 20))
    models = [
        ModelEntry(m.name, m.features, m.architecture, m.probs if i in probs_on else None,
                   m.depth if i in depth_on else None, m.source, m.source_images)
        for i, m in enumerate(b.models)
    ]  # fmt: skip
    t = b.target
    ref = {a: r for a, r in t.reference_features.items() if a in refs} or None
    return Bank(Target(t.name, t.labels, K, t.num_images, ref), models)


class _Resolved(Exception):
    """Raised by a stand-in for the engine: records what score_bank asked it to run."""


def _methods_run(monkeypatch, bank, **kwargs) -> tuple[list[str], dict[str, str]]:
    """score_bank's method resolution without compiling anything."""
    import parc_jax.api as api

    seen = {}
    real = api.resolve_methods

    def resolve(*args, **kw):
        seen["out"] = real(*args, **kw)
        return seen["out"]

    def stop(models, target, options, **kw):
        raise _Resolved(options.methods)

    monkeypatch.setattr(api, "resolve_methods", resolve)
    monkeypatch.setattr(api, "score_stream", stop)
    with pytest.raises(_Resolved) as info:
        score_bank(bank, progress=False, **kwargs)
    assert list(info.value.args[0]) == list(api.engine_methods(seen["out"][0]))
    return seen["out"]


def test_repeated_methods_are_scored_once_in_first_order():
    b = _bank(4, widths=(12, 20))
    once = score_bank(b, methods=["knn", "parc"], chunk_size=2, progress=False)
    for methods in (["parc", "knn", "parc"], "parc, knn,parc", ["parc", "parc", "knn"]):
        res = score_bank(b, methods=methods, chunk_size=2, progress=False)
        assert res.methods == ["parc", "knn"], methods
        for m in ("parc", "knn"):
            np.testing.assert_array_equal(res.scores[m], once.scores[m], err_msg=m)


def test_methods_take_one_name_or_a_comma_separated_string(monkeypatch, bank):
    assert engine.method_names("parc") == (["parc"], False)
    assert engine.method_names(" parc,knn ") == (["parc", "knn"], False)
    assert engine.method_names("all") == (ALL, True)
    assert _methods_run(monkeypatch, bank, methods="parc")[0] == ["parc"]
    assert _methods_run(monkeypatch, bank, methods="knn,parc")[0] == ["knn", "parc"]
    for bad, match in (("", "at least one"), ("all,parc", "combined"), ([1], "expected"),
                       ("parc,pacr", "unknown scorer.*pacr")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            engine.method_names(bad)


def test_depth_prior_is_over_the_finite_scores_only():
    """dds is degenerate (whitened) for the 70-wide model: NaN there, NaN for dds+l, and the
    other models' dds+l are docs/metrics.md's prior (sample-std z-score + depth / l_max) over the
    three finite scores only."""
    b = _bank(4, widths=(12, 20, 70, 12))
    res = score_bank(b, methods=["dds"], depth_prior=True, l_max=20.0, chunk_size=2,
                     progress=False)  # fmt: skip
    j = res.names.index("m2")
    s, plus = res.scores["dds"], res.scores["dds+l"]
    assert np.isnan(s[j]) and np.isnan(plus[j])
    assert "'m2'" in res.flags["dds"] and "'m2'" in res.flags["dds+l"]
    ok = np.isfinite(s)
    assert ok.sum() == 3
    depths = np.array([m["depth"] for m in res.models], float)
    x = s[ok].astype(np.float64)
    want = (x - x.mean()) / x.std(ddof=1) + depths[ok] / 20.0
    np.testing.assert_allclose(plus[ok], want, rtol=1e-5, atol=1e-5)


def test_flags_name_the_models_that_are_nan():
    """A degenerate model and a scorer NaN in the same method: both named, each with its
    reason; the flag never names a model that is finite."""
    from parc_jax.api import _narrow, _target_info, degenerate_flags

    b = _bank(4, widths=(12, 20, 70, 12))
    kept = [_narrow(m) for m in b.models]
    scores = {"dds": np.array([1.0, np.nan, 3.0, 4.0], np.float32)}
    flags = degenerate_flags(kept, _target_info(b.target), {"dds": 64}, scores)
    assert np.isnan(scores["dds"]).tolist() == [False, True, True, False]
    assert "degenerate for 1 of 4 model(s) ('m2')" in flags["dds"]
    assert "not finite for 1 of 4 model(s) ('m1')" in flags["dds"]
    assert "'m0'" not in flags["dds"] and "'m3'" not in flags["dds"]


def test_undefined_rank_scores_are_nan_and_flagged():
    """One dimension after PCA (n_dims 1) leaves every pairwise distance equal: parc and rsa
    are undefined for every model; constant features make them (and dds) undefined for that
    model."""
    b = _bank(4, widths=(12, 20))
    res = score_bank(b, methods=["parc", "rsa"], n_dims=1, chunk_size=2, progress=False)
    for m in ("parc", "rsa"):
        assert np.isnan(res.scores[m]).all(), m
        assert "undefined for 4 of 4" in res.flags[m] and "one dimension" in res.flags[m]
    flat = Bank(b.target, [ModelEntry("flat", np.ones_like(b.models[0].features), "a")]
                + list(b.models[1:]))  # fmt: skip
    # n_dims None: without PCA's exact zeros, U-centring left dds 8.9e-6 of rounding, not NaN
    res = score_bank(flat, methods=["parc", "rsa", "dds"], n_dims=None, chunk_size=2,
                     progress=False)  # fmt: skip
    j = res.names.index("flat")
    for m in ("parc", "rsa", "dds"):
        assert np.isnan(res.scores[m][j]) and np.isfinite(np.delete(res.scores[m], j)).all()
        assert "not finite for 1 of 4 model(s) ('flat')" in res.flags[m]
        assert "constant features" in res.flags[m] and "please report" not in res.flags[m]


def test_score_spread_leaves_degenerate_models_out():
    """The whitened dds model is NaN in the spread and never ranks first."""
    b = _bank(4, widths=(12, 20, 70, 12))
    res = score_bank(b, methods=["dds"], bootstrap=3, depth_prior=True, chunk_size=2,
                     progress=False)  # fmt: skip
    j = res.names.index("m2")
    for key in ("dds", "dds+l"):
        sp = res.spread[key]
        assert np.isnan(sp["mean"][j]) and np.isnan(sp["std"][j]) and sp["top1"][j] == 0
        assert np.isfinite(np.delete(sp["mean"], j)).all()
        assert sp["top1"].sum() == pytest.approx(1.0)


def test_spread_of_resamples_without_a_finite_score_has_no_winner():
    from parc_jax.api import _spread

    sp = _spread(np.array([[np.nan, np.nan], [1.0, 2.0]]))
    assert sp["top1"].tolist() == [0.0, 0.5]
    assert np.isnan(sp["mean"]).all()


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0)])
def test_methods_all_is_decided_from_every_model(monkeypatch, order):
    """Two of four models have probs, one architecture has no reference, one model no depth:
    in either model order, "all" skips leep/nce, rsa/dds and heuristic with true counts, and
    each asked for by name is an error naming a model that lacks the field."""
    b = _partial_bank(probs_on=(0, 1), depth_on=(0, 1, 2), refs=("a",))
    b = Bank(b.target, [b.models[i] for i in order])
    run, skipped = _methods_run(monkeypatch, b, methods="all")
    assert {"leep", "nce", "pactran_dir", "pactran_gamma", "rsa", "dds", "heuristic"} == set(
        skipped
    )
    assert "parc" in run and "knn" in run
    assert skipped["leep"].startswith("2 of 4 models have no probs")
    assert skipped["rsa"].startswith("2 of 4 models have no reference_features")
    assert skipped["heuristic"].startswith("1 of 4 models have no depth")
    for m, name in (("leep", "'m[23]'"), ("rsa", "'m[13]'"), ("heuristic", "'m3'")):
        with pytest.raises(ValueError, match=f"{m} cannot run on this bank: model {name}"):
            score_bank(b, methods=[m], progress=False)
    with pytest.raises(ValueError, match="depth_prior: model 'm3' has no 'depth'"):
        score_bank(b, methods=["parc"], depth_prior=True, progress=False)


def test_facts_of_a_sharded_bank_come_from_its_headers(tmp_path, monkeypatch):
    """reader_facts reads names, architectures and which fields are present without reading
    the models; a sharded bank resolves "all" from every shard."""
    from parc_jax.api import reader_facts
    from parc_jax.bank import BankReader, open_bank

    b = _partial_bank(probs_on=(2, 3), depth_on=(1,))
    write_bank(tmp_path / "a.msgpack", Bank(b.target, b.models[:2]))
    write_bank(tmp_path / "b.msgpack", Bank(b.target, b.models[2:]))
    reader = open_bank(tmp_path)
    want = [engine.ModelFacts.of(m) for m in reader.iter_models()]
    monkeypatch.setattr(BankReader, "iter_models", lambda self: pytest.fail("read the models"))
    assert reader_facts(reader) == want
    monkeypatch.undo()
    _, skipped = _methods_run(monkeypatch, tmp_path, methods="all")
    assert skipped["leep"].startswith("2 of 4 models have no probs (e.g. 'm0')")


def test_rows_and_dict_reject_a_bad_top():
    res = ScoreResult(target={}, methods=["parc"], models=[
        {"name": f"m{i}", "architecture": "a"} for i in range(3)
    ], scores={"parc": np.array([1.0, 3.0, 2.0])}, provenance={})  # fmt: skip
    assert [r["name"] for r in res.rows(top=2)] == ["m1", "m2"]
    assert len(res.to_dict(top=np.int64(5))["models"]) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="top: expected a positive int"):
            res.rows(top=bad)
        with pytest.raises(ValueError, match="top: expected a positive int"):
            res.to_dict(top=bad)


def test_l_max_must_be_a_finite_positive_number(bank):
    for bad in ("50", None, True, float("nan"), float("inf"), 0, -5.0):
        with pytest.raises(ValueError, match="l_max: expected a finite positive number"):
            score_bank(bank, methods=["parc"], depth_prior=True, l_max=bad, progress=False)

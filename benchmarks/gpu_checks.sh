#!/usr/bin/env bash
# Every GPU check of the engine, for a machine with one NVIDIA GPU and a CUDA build of JAX, as
# two calls of at most 6 minutes each (a device lease is 15 minutes in all):
#
#     STAGES="tests exact" benchmarks/gpu_checks.sh OUTDIR      # <= 5.9 min
#     STAGES="targets profile" benchmarks/gpu_checks.sh OUTDIR  # <= 6 min
#
# tests: every GPU-eligible engine, scorer and statistics test against the NumPy/SciPy
# references, engine and scorers first, sharded over pytest-xdist workers (work stealing, one
# compilation cache for all), a JUnit XML of every result. targets: the issue's table on
# 1,000 models (n = 500, d = 2048): fast PARC and its largest |difference| from float64, exact
# PARC, the 13 scorers together, end to end (one chunk, and chunks of 250 to overlap transfer
# and compute), host-to-device GB/s, logistic alone, and the newer scorers. profile: PARC's
# pieces. exact: the exact PCA by eigh and by certified subspace iteration (the accelerators'
# default) on 1,000 models, time and accuracy. Also: assembly (the host's chunk assembly),
# sweep (the throughput sweep), compile (every program's compile time).
# Each stage has its own time limit and writes as it goes, so a stage that fails or runs out
# of time leaves the others' results.
#
# OUTDIR (default benchmarks/results/gpu) gets at most 10 files: run.log (everything printed),
# tests-junit.xml, targets-gpu.{json,md}, targets-logistic-gpu.{json,md},
# targets-newer-gpu.{json,md}, profile_parc-gpu.json, exact_pca-gpu.{json,md} (assembly, sweep
# and compile add their own).
# SMOKE=1 runs the same stages at toy sizes (about 3 minutes on 2 CPU cores): try the script
# there before spending device time on it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
log="$out/run.log"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)

profile=()
assembly=(--models 500 --repeats 2 --threads 1 0)
targets=(--repeats 3 --parc-chunk-sizes --e2e-chunk-sizes 250 --transfer-probe --methods parc rsa
  dds leep nce hscore hscore_shrink logme transrate gbc gbc_spherical knn heuristic)
newer=(--repeats 2 --parc-chunk-sizes --e2e-chunk-sizes --methods sfda nleep pactran_dir
  pactran_gamma pactran_gauss ncti_seli ncti_ncc ncti_vc etran lfc)
logistic=(--repeats 1 --e2e-repeats 1 --methods logistic --parc-chunk-sizes)
tests=(-k "not eight_cpu_devices and not deadlock")
exact=(--models 1000 --widths 2048 --repeats 2 --no-banks)
sweep=(--batch-sizes 1 16 64 256 1024 --chunk-size 256 --methods parc logme hscore
  hscore_shrink gbc gbc_spherical knn leep nce dds rsa transrate logistic heuristic sfda nleep
  pactran_dir pactran_gamma pactran_gauss ncti_seli ncti_ncc ncti_vc etran lfc)
if [[ ${SMOKE:-0} == 1 ]]; then
  small=(--pool 3 --n 200 --num-classes 20 --z 100)
  profile=(--models 8 --n 200 --d 256)
  assembly=(--models 32 --d 256 --repeats 2 --threads 1 0)
  targets=(--repeats 2 --models 16 --chunk-sizes 16 --parc-chunk-sizes --e2e-chunk-sizes 8
    --transfer-probe --d 256 "${small[@]}" --methods parc leep logme)
  logistic=(--repeats 1 --e2e-repeats 1 --models 16 --chunk-sizes 16 --d 256 "${small[@]}"
    --methods logistic --parc-chunk-sizes)
  newer=(--repeats 1 --models 16 --chunk-sizes 16 --d 256 "${small[@]}" --parc-chunk-sizes
    --e2e-chunk-sizes --methods sfda lfc)
  tests=(-k "matches_reference_for_every_scorer or certified")
  exact=(--models 4 --n 120 --widths 256 --repeats 1 --no-banks --synthetic-models 3)
  sweep=(--batch-sizes 1 4 --chunk-size 4 --widths 64 128 --repeats 1 "${small[@]}"
    --methods parc leep logistic)
fi

stages=${STAGES:-tests exact targets profile}
stage() { echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$log"; }
want() { [[ " $stages " == *" $1 "* ]]; }

stage environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
$py -c "import jax, jaxlib, numpy, scipy, flax, optax; print('jax', jax.__version__, 'jaxlib',
jaxlib.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, jax.devices())" \
  2>&1 | tee -a "$log"
nproc | tee -a "$log"

if want tests; then
  stage "engine and scorers against the NumPy/SciPy references, on the GPU"
  workers=()  # pytest-xdist if present: work stealing keeps every worker busy to the end
  $py -c "import xdist" 2>/dev/null && workers=(-n "${WORKERS:-12}" --dist worksteal)
  # one compilation cache for every worker (conftest's default is one per process); the
  # engine and scorer files first, so a time limit cuts the CLI's test, not theirs
  JAX_COMPILATION_CACHE_DIR=$(mktemp -d) XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 300 \
    $py -m pytest -v "${workers[@]}" -rfE --tb=short --durations=40 \
    -p no:cacheprovider -p no:benchmark --junitxml="$out/tests-junit.xml" \
    tests/test_engine.py tests/test_scorers_parc.py tests/test_scorers_stats.py \
    tests/test_newer_scorers.py tests/test_regression.py tests/test_exact_pca.py \
    tests/test_cli.py::test_no_bank_scores_the_shipped_example "${tests[@]}" 2>&1 | tee -a "$log"
fi

if want exact; then
  stage "exact PCA: eigh and certified subspace iteration, 1,000 models"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 45 $py benchmarks/exact_pca.py "${exact[@]}" \
    --out "$out/exact_pca-gpu.json" 2>&1 | tee -a "$log"
fi

if want targets; then
  stage "targets: 1,000 models, n=500, d=2048"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 180 $py benchmarks/targets.py "${targets[@]}" \
    --out "$out/targets-gpu.json" 2>&1 | tee -a "$log"
  stage "targets: logistic alone (L-BFGS to convergence, vmapped)"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 80 $py benchmarks/targets.py "${logistic[@]}" \
    --out "$out/targets-logistic-gpu.json" 2>&1 | tee -a "$log"
  stage "targets: the newer scorers (sfda, nleep, pactran, ncti parts, etran, lfc), 1,000 models"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 75 $py benchmarks/targets.py "${newer[@]}" \
    --out "$out/targets-newer-gpu.json" 2>&1 | tee -a "$log"
fi

if want profile; then
  stage "profile: PARC's pieces over 1,000 models"
  timeout 65 $py benchmarks/profile_parc.py "${profile[@]}" --out "$out/profile_parc-gpu.json" \
    2>&1 | tee -a "$log"
fi

if want assembly; then
  stage "host assembly of a 500-model chunk: 1 thread and the engine's default"
  timeout 10 $py benchmarks/assembly.py "${assembly[@]}" --out "$out/assembly-gpu-host.json" \
    2>&1 | tee -a "$log"
fi

if want sweep; then
  stage "throughput sweep"
  timeout 200 $py benchmarks/throughput.py "${sweep[@]}" --skip-reference logistic transrate \
    --time-budget 150 --out "$out/throughput-gpu.json" 2>&1 | tee -a "$log"
fi
if want compile; then
  stage "compile: every program's trace/lower/compile seconds, cold and warm cache"
  timeout 240 $py benchmarks/compile.py --only programs --chunk-only --out "$out/compile-gpu.json" \
    2>&1 | tee -a "$log"
fi
stage done

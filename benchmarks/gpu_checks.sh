#!/usr/bin/env bash
# Every GPU check of the engine in one go, for a machine with one NVIDIA GPU and a CUDA build
# of JAX (at most 9.7 minutes by its stage limits): the engine-versus-reference tests on the
# GPU, the 1,000-model targets, the profile of PARC's pieces and the host's chunk assembly,
# and (STAGES=sweep) the throughput sweep. Each stage has its own time limit and writes as it
# goes, so a stage that fails or runs out of time leaves the others' results.
#
#     benchmarks/gpu_checks.sh [OUTDIR]        # default benchmarks/results/gpu
#
# OUTDIR gets run.log (everything printed), profile_parc-gpu.json, assembly-gpu-host.json,
# targets-gpu.{json,md}, throughput-gpu.{json,md}, compile-gpu.{json,md}. STAGES (default
# "tests targets profile") picks from tests, targets, profile, sweep, compile; they run in that
# order.
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
targets=(--repeats 3 --methods parc rsa dds leep nce hscore hscore_shrink logme transrate gbc
  gbc_spherical knn heuristic sfda nleep pactran_dir pactran_gamma ncti_seli ncti_ncc ncti_vc
  etran lfc)
logistic=(--repeats 1 --e2e-repeats 1 --methods logistic --parc-chunk-sizes)
tests=(-k "not eight_cpu_devices and not deadlock")
sweep=(--batch-sizes 1 16 64 256 1024 --chunk-size 256 --methods parc logme hscore
  hscore_shrink gbc gbc_spherical knn leep nce dds rsa transrate logistic heuristic sfda nleep
  pactran_dir pactran_gamma pactran_gauss ncti_seli ncti_ncc ncti_vc etran lfc)
if [[ ${SMOKE:-0} == 1 ]]; then
  small=(--pool 3 --n 200 --num-classes 20 --z 100)
  profile=(--models 8 --n 200 --d 256)
  assembly=(--models 32 --d 256 --repeats 2 --threads 1 0)
  targets=(--repeats 2 --models 16 --chunk-sizes 16 --parc-chunk-sizes 8 --d 256 "${small[@]}"
    --methods parc leep logme)
  logistic=(--repeats 1 --e2e-repeats 1 --models 16 --chunk-sizes 16 --d 256 "${small[@]}"
    --methods logistic --parc-chunk-sizes)
  tests=(-k "matches_reference_for_every_scorer")
  sweep=(--batch-sizes 1 4 --chunk-size 4 --widths 64 128 --repeats 1 "${small[@]}"
    --methods parc leep logistic)
fi

stages=${STAGES:-tests targets profile}
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
  workers=(); $py -c "import xdist" 2>/dev/null && workers=(-n 12)  # pytest-xdist if present
  # one compilation cache for every worker (conftest's default is one per process)
  JAX_COMPILATION_CACHE_DIR=$(mktemp -d) XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 200 \
    $py -m pytest -v "${workers[@]}" -rf --tb=short --durations=25 \
    -p no:cacheprovider -p no:benchmark tests/test_engine.py tests/test_scorers_stats.py \
    tests/test_scorers_parc.py tests/test_cli.py::test_no_bank_scores_the_shipped_example \
    "${tests[@]}" 2>&1 | tee -a "$log"
fi

if want targets; then
  stage "targets: 1,000 models, n=500, d=2048"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 170 $py benchmarks/targets.py "${targets[@]}" \
    --out "$out/targets-gpu.json" 2>&1 | tee -a "$log"
  stage "targets: logistic alone (L-BFGS to convergence, vmapped)"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 timeout 90 $py benchmarks/targets.py "${logistic[@]}" \
    --out "$out/targets-logistic-gpu.json" 2>&1 | tee -a "$log"
fi

if want profile; then
  stage "profile: PARC's pieces over 1,000 models"
  timeout 90 $py benchmarks/profile_parc.py "${profile[@]}" --out "$out/profile_parc-gpu.json" \
    2>&1 | tee -a "$log"
  stage "host assembly of a 500-model chunk: 1 thread and the engine's default"
  timeout 30 $py benchmarks/assembly.py "${assembly[@]}" --out "$out/assembly-gpu-host.json" \
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

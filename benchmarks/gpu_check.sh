#!/usr/bin/env bash
# The GPU check: everything to run on a GPU machine, in one call well inside 10 minutes.
#
#   bash benchmarks/gpu_check.sh [--shared-data DIR] [--quality-only] [--set "KEY=VALUE ..."]
#                                [--then "KEY=VALUE ..."]
#                                                      on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run             here, on the CPU: tiny sizes, local venv, no wheels,
#                                                      and steps 4 and 5 on the scikit-learn digits
#
# On the GPU machine python3 has torch but not faiss, umap-learn, pynndescent or dash, and
# there is no network: carry the repository's ignored .whl/ folder (benchmarks/gpu_wheels.sh
# fills it, and .shared-data/). The CIFAR-10 quality run (step 4) needs cifar10-jpg.tar.gz
# from the folder given by --shared-data, $ICE_SHARED_DATA or ./.shared-data (carry it too);
# without it, step 4 is skipped.
#
# Steps: 1. install the wheels into /tmp/site; 2. pytest -m gpu (none collected is fine);
# 3. training and embedding images/s on CUDA at 32x32 and 64x64, bf16 autocast vs fp32, and
#    training at 32x32 through torch.compile (--compile) vs eager;
# 4. python -m benchmarks.quality --dataset cifar10 with the time that is left: the defaults,
#    which for colour images on a GPU are the contrastive recipe (docs/pipeline.md), or with
#    --set "KEY=VALUE ..." those settings (e.g. "compile=true epochs=150");
# 5. python -m benchmarks.cluster_pick --self-label on that run, if 150 s are left: the cluster
#    step's climb along the neighbour graph (graph_rounds 0 and 20, 3 mixture seeds), each
#    clustering then self-labelled on the GPU as the job does it. With --then
#    "KEY=VALUE ...", step 5 instead runs step 4's benchmark again with those settings (quality
#    --set KEY=VALUE each; e.g. "batch_size=1024 epochs=150"), if 200 s are left: a setting
#    measured against the defaults in one call (not against --set's settings). Its run is not kept.
# --quality-only skips step 3 and runs step 2 beside step 5's probe (its own log, pytest_gpu.log);
# with --then, between steps 4 and 5; else last, with what is left (90 s at least).
# Logs and results go to $OUT (or a new temporary folder): gpu_check.log, BENCHMARKS-gpu.md,
# and cifar-run/ with the CIFAR-10 run's embeddings, clusters and model (quality --keep), so
# that clustering can be studied later without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
QUALITY_ONLY=0
SHARED="${ICE_SHARED_DATA:-}"
THEN=()
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --quality-only) QUALITY_ONLY=1 ;;
    --shared-data) SHARED="$2"; shift ;;
    --set) for pair in $2; do SETS+=(--set "$pair"); done; shift ;;
    --then) for pair in $2; do THEN+=(--set "$pair"); done; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --quality-only, --shared-data DIR," \
            "--set \"KEY=VALUE ...\" or --then \"KEY=VALUE ...\")" >&2; exit 2 ;;
  esac
  shift
done
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}  # a remote GPU machine may stop a command at 600 s
OUT="${OUT:-$(mktemp -d -t gpu-check-XXXX)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
RESULTS="$OUT/BENCHMARKS-gpu.md"
export PYTHONUNBUFFERED=1
FAILED=()

say() { echo "== $* [$SECONDS s]" | tee -a "$LOG"; }
run() {  # run "name" timeout_s command...: log it, note a failure, go on
  local name="$1" limit="$2"; shift 2
  say "$name: $*"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { say "$name: exit $rc"; FAILED+=("$name (exit $rc)"); }
  return "$rc"
}

if [ "$DRY" = 1 ]; then
  PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
  SPEED=(--dry-run --device cpu --record "$RESULTS")
  say "dry run on the CPU with $PY: no wheels, tiny sizes"
else
  PY=python3
  SPEED=(--device cuda --record "$RESULTS")
  say "1. install the carried wheels"
  ls .whl/*.whl >/dev/null 2>&1 || { say "no .whl/*.whl here: carry the repository's .whl folder"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee -a "$LOG" || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
"$PY" -c "import torch, faiss, umap, sklearn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'faiss', faiss.__version__, 'umap', umap.__version__)" 2>&1 | tee -a "$LOG"

gpu_tests() {  # step 2
  # only the files that use the marker: collecting the others would import selenium (browser tests)
  local tests
  tests=$(grep -l "mark.gpu" tests/test_*.py 2>/dev/null | tr '\n' ' ')
  if [ -z "$tests" ]; then
    say "no GPU-marked tests in tests/: nothing to run"
  elif [ "$DRY" = 1 ]; then
    run "pytest -m gpu (collect only)" 120 "$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider $tests
  else
    run "pytest -m gpu" "$1" "$PY" -m pytest -m gpu -q -p no:cacheprovider $tests
    if [ $? = 5 ]; then  # no test selected: not a failure
      say "no GPU-marked tests collected (exit 5): fine"
      FAILED=("${FAILED[@]:0:${#FAILED[@]}-1}")
    fi
  fi
}

say "2. GPU-marked tests"
if [ "$QUALITY_ONLY" = 1 ]; then
  say "--quality-only: step 3 skipped, step 2 moved to the end"
else
gpu_tests 180

say "3. training and embedding throughput"
run "speed train" 150 "$PY" -m benchmarks.speed --stage train "${SPEED[@]}"
run "speed embed" 150 "$PY" -m benchmarks.speed --stage embed "${SPEED[@]}"
fi

say "4. CIFAR-10 quality"
SHARED="${SHARED:-$([ -d .shared-data ] && echo "$PWD/.shared-data" || echo ../shared/data)}"
LEFT=$((BUDGET_S - SECONDS))
if [ "$DRY" = 1 ]; then  # the same two steps on the digits, a training epoch, on the CPU, recorded only in $OUT
  QUALITY=(--dataset digits --device cpu --set epochs=1 --no-record)
  PROBE=(--seeds 0 --device cpu)
  NEED_4=0 NEED_5=0
  say "dry run: the scikit-learn digits on the CPU instead of CIFAR-10 on CUDA"
else
  QUALITY=(--dataset cifar10 --device cuda)
  PROBE=(--seeds 0,5,10 --device cuda)
  NEED_4=340  # the contrastive recipe's run took 309 s on an H200, and extracting 40 s
  NEED_5=150  # six self-labellings of 9 s on an H200 (2026-11-30), the manifold and 15 mixture starts
  [ ${#THEN[@]} -gt 0 ] && NEED_5=200  # the defaults' run took 233 s (84 epochs); a second skips the extraction
fi
if [ "$DRY" = 0 ] && [ ! -f "$SHARED/cifar10-jpg.tar.gz" ]; then
  say "skipped: $SHARED/cifar10-jpg.tar.gz not found (carry it and pass --shared-data DIR)"
elif [ "$LEFT" -lt "$NEED_4" ]; then
  say "skipped: only $LEFT s left of the $BUDGET_S s budget"
else
  before=$(stat -c %s BENCHMARKS.md 2>/dev/null || echo 0)
  RUN_DIR="$(mktemp -d -t quality-run-XXXX)/run"  # with the pixels, for step 5; not brought back
  ICE_SHARED_DATA="$SHARED" run "quality ${QUALITY[1]}${SETS[*]+ ${SETS[*]}} (at most $LEFT s)" "$LEFT" \
    "$PY" -m benchmarks.quality "${QUALITY[@]}" ${SETS[@]+"${SETS[@]}"} --out "$RUN_DIR" --keep "$OUT/cifar-run"
  [ "$DRY" = 0 ] && [ -f BENCHMARKS.md ] && tail -c +"$((before + 1))" BENCHMARKS.md >> "$RESULTS"
  if [ ${#THEN[@]} -gt 0 ]; then
    if [ "$QUALITY_ONLY" = 1 ] && [ -f "$RUN_DIR/manifest.json" ]; then  # step 5 is timed: the tests go first
      say "2 (moved). GPU-marked tests, before step 5"
      gpu_tests 120
      TESTS_DONE=1
    fi
    say "5. CIFAR-10 quality again, with ${THEN[*]}"
  else
    say "5. the cluster step's climb, self-labelled, on that run"
  fi
  LEFT=$((BUDGET_S - SECONDS))
  if [ ! -f "$RUN_DIR/manifest.json" ]; then
    say "skipped: the quality run did not finish"
  elif [ "$LEFT" -lt "$NEED_5" ]; then
    say "skipped: only $LEFT s left of the $BUDGET_S s budget"
  elif [ ${#THEN[@]} -gt 0 ]; then  # timed, so nothing runs beside it
    before=$(stat -c %s BENCHMARKS.md 2>/dev/null || echo 0)
    ICE_SHARED_DATA="$SHARED" run "quality ${QUALITY[1]}, ${THEN[*]} (at most $LEFT s)" "$LEFT" \
      "$PY" -m benchmarks.quality "${QUALITY[@]}" "${THEN[@]}" --out "$RUN_DIR-then"
    [ "$DRY" = 0 ] && [ -f BENCHMARKS.md ] && tail -c +"$((before + 1))" BENCHMARKS.md >> "$RESULTS"
  else
    if [ "$QUALITY_ONLY" = 1 ]; then  # the GPU tests beside the probe (neither is timed), in their own log
      say "2 (moved). GPU-marked tests, beside step 5: log in $OUT/pytest_gpu.log"
      (LOG="$OUT/pytest_gpu.log"; FAILED=(); gpu_tests "$LEFT" >/dev/null; [ ${#FAILED[@]} = 0 ]) &
      TESTS_PID=$!
    fi
    PICK=(--picks graph --graph-rounds 0,20 --self-label "${PROBE[@]}")
    run "cluster_pick (at most $LEFT s)" "$LEFT" "$PY" -m benchmarks.cluster_pick "$RUN_DIR" "${PICK[@]}"
    {  # its lines into the results too, with the command, for BENCHMARKS.md
      printf '\n### The climb, each way self-labelled, on that run (%s)\n\n```\n' "$(date -u +%F)"
      echo "python -m benchmarks.cluster_pick RUN_DIR ${PICK[*]}"
      grep -E '^(mixture_pick |  then self-labelled)' "$LOG"
      printf '```\n'
    } >> "$RESULTS"
  fi
  rm -rf "$(dirname "$RUN_DIR")"
fi

if [ -n "${TESTS_PID:-}" ]; then
  wait "$TESTS_PID" || FAILED+=("pytest -m gpu (see pytest_gpu.log)")
  tail -n 5 "$OUT/pytest_gpu.log" | tee -a "$LOG"
elif [ "$QUALITY_ONLY" = 1 ] && [ -z "${TESTS_DONE:-}" ]; then
  LEFT=$((BUDGET_S - SECONDS))
  say "2 (moved). GPU-marked tests"
  if [ "$LEFT" -lt 90 ]; then
    say "skipped: only $LEFT s left of the $BUDGET_S s budget"
  else
    gpu_tests "$LEFT"
  fi
fi

say "done in $SECONDS s; results in $RESULTS"
grep -E '^\| (train|encoder|embeddings)|x\*\*|target|accuracy' "$RESULTS" 2>/dev/null | tee -a "$LOG"
if [ ${#FAILED[@]} -gt 0 ]; then
  say "FAILED: ${FAILED[*]}"
  exit 1
fi

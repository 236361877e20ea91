#!/usr/bin/env bash
# The teach loop on a GPU, in one call of a few minutes: each CIFAR-10 class found with the
# standard protocol (find_group: teach, similarity and the linear probe), then a round's time
# at 100k images (--tile 10). RUN is a labelled CIFAR-10 run (`ice embed DIR --labels-from-folders`,
# pixels, embeddings, items, manifest and model are enough); WHEELS, a folder of wheels of
# what the machine lacks (tqdm where torch, numpy, pandas, pyarrow and scikit-learn are there).
#
#   OUT=/some/dir bash benchmarks/gpu_teach.sh RUN [WHEELS]
#
# The logs and benchmarks/results/find_group.jsonl (the runs' records, to merge) go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
WHEELS=${2:-}
OUT=${OUT:-gpu-teach-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -n "$WHEELS" ]; then
  "$PY" -m pip install --quiet --no-index --no-deps --target /tmp/ice-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/ice-site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -m benchmarks.find_group --dataset cifar10 --run "$RUN" --learners teach,similarity,linear \
  --device cuda 2>&1 | tee "$OUT/find_group_cifar10.log"
"$PY" -m benchmarks.find_group --dataset cifar10 --run "$RUN" --class airplane --learners teach --tile 10 \
  --device cuda 2>&1 | tee "$OUT/find_group_tile.log"
cp benchmarks/results/find_group.jsonl "$OUT/"

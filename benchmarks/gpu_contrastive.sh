#!/usr/bin/env bash
# The contrastive recipe on CIFAR-10, on a GPU machine, in one call, with its epochs sized to the card.
#
#   GPU_BUDGET_S=540 bash benchmarks/gpu_contrastive.sh [--shared-data DIR] [--train-seconds S]
#
# 1. install the carried wheels (as gpu_check.sh does);
# 2. time 30 training steps of the recipe on random pixels, and size the epochs so that
#    training takes about --train-seconds (default 130 s) on this card;
# 3. python -m benchmarks.quality --dataset cifar10 with the recipe and those epochs;
# 4. python -m benchmarks.ssl_probe with the same recipe, for as long as the budget allows.
# Logs and the BENCHMARKS.md sections go to $OUT, with the quality run's embeddings, labels,
# clusters and model in $OUT/cifar-run and the probe's latest in $OUT/probe.
set -uo pipefail
cd "$(dirname "$0")/.."
SHARED="${ICE_SHARED_DATA:-}"
TRAIN_S=130
while [ $# -gt 0 ]; do
  case "$1" in
    --shared-data) SHARED="$2"; shift ;;
    --train-seconds) TRAIN_S="$2"; shift ;;
    *) echo "gpu_contrastive.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
BUDGET_S=${GPU_BUDGET_S:-540}
OUT="${OUT:-$(mktemp -d -t gpu-contrastive-XXXX)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_contrastive.log"
export PYTHONUNBUFFERED=1
say() { echo "== $* [$SECONDS s]" | tee -a "$LOG"; }

RECIPE=(recipe=contrastive)  # the sixth session's run spelled out its settings, which this recipe now holds
SETS=()
for kv in "${RECIPE[@]}"; do SETS+=(--set "$kv"); done

say "1. install the carried wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -3 | tee -a "$LOG"
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"

say "2. training throughput of the recipe"
RATE=$(timeout 120 python3 - "${RECIPE[@]}" <<'EOF' 2>>"$LOG"
import sys, time, torch
from benchmarks.common import parse_sets
from embeddings.config import Config
from embeddings.model import AutoEncoder
from embeddings.train import model_args, step_loss
cfg = Config(image_size=32, **parse_sets(sys.argv[1:])).resolved()
dev = torch.device("cuda")
model = AutoEncoder(model_args(cfg)).to(dev, memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
gen = torch.Generator(device=dev).manual_seed(0)
batch = torch.randint(0, 256, (cfg.batch_size, 32, 32, 3), dtype=torch.uint8, device=dev)
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = step_loss(model, batch, cfg, gen)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(10): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(30): step()
torch.cuda.synchronize()
print(f"{30 * cfg.batch_size / (time.perf_counter() - t):.0f}")
EOF
)
say "recipe trains at ${RATE:-?} images/s (two views each)"
EPOCHS=$(python3 -c "print(max(5, min(200, int(${RATE:-0} * $TRAIN_S / 60000))))")
say "epochs for about $TRAIN_S s of training on 60k images: $EPOCHS"

SHARED="${SHARED:-$([ -d .shared-data ] && echo "$PWD/.shared-data" || echo ../shared/data)}"
say "3. quality, CIFAR-10, recipe, $EPOCHS epochs"
before=$(stat -c %s BENCHMARKS.md)
ICE_SHARED_DATA="$SHARED" timeout $((BUDGET_S - SECONDS - 30)) python3 -m benchmarks.quality --dataset cifar10 \
  --device cuda "${SETS[@]}" --set epochs="$EPOCHS" --out /tmp/cifar-run 2>&1 | tr '\r' '\n' | grep -v '\]$' \
  | tee -a "$LOG"
tail -c +"$((before + 1))" BENCHMARKS.md > "$OUT/BENCHMARKS-quality.md"
# keep what clustering needs, to study it later without a GPU (about 40 MB; the pixels stay)
python3 - /tmp/cifar-run "$OUT/cifar-run" <<'KEEP' 2>&1 | tee -a "$LOG"
import shutil, sys
from pathlib import Path
import numpy as np, pandas as pd
run, keep = Path(sys.argv[1]), Path(sys.argv[2])
keep.mkdir(parents=True, exist_ok=True)
np.save(keep / "embeddings.npy", np.load(run / "embeddings.npy").astype(np.float16))
items = pd.read_parquet(run / "items.parquet").sort_values("image_id")
items[["image_id", "path", "cluster", "label"]].to_parquet(keep / "items.parquet", index=False)
for name in ("assign.npz", "manifest.json", "model.pt"):
    shutil.copyfile(run / name, keep / name)
print("kept", sorted(p.name for p in keep.iterdir()))
KEEP

LEFT=$((BUDGET_S - SECONDS))
say "4. probe with the rest ($LEFT s)"
if [ "$LEFT" -gt 60 ]; then
  PROBE_EPOCHS=$(python3 -c "print(max(2, int(${RATE:-0} * ($LEFT - 45) / 60000 / 1.15)))")
  ICE_SHARED_DATA="$SHARED" timeout $((LEFT - 5)) python3 -m benchmarks.ssl_probe --dataset cifar10 --device cuda \
    --every 5 "${SETS[@]}" --set epochs="$PROBE_EPOCHS" --save "$OUT/probe" 2>&1 | tr '\r' '\n' | grep -v '\]$' | tee -a "$LOG"
fi
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
say "done"

#!/usr/bin/env bash
# Fill the two ignored folders that benchmarks/gpu_check.sh needs on a GPU machine that
# has python 3.12 with torch, torchvision, numpy, scipy, scikit-learn, numba, pandas and
# pyarrow (as found there on 2026-11-27), but no network:
#   .whl/          the wheels of what it lacks, at the versions this checkout's .venv runs
#   .shared-data/  cifar10-jpg.tar.gz, copied from ../shared/data (or $ICE_SHARED_DATA)
#
#   bash benchmarks/gpu_wheels.sh           download (PyPI) and copy, here
#   bash benchmarks/gpu_wheels.sh --print   only list the wheels as NAME==VERSION
#
# Then one device call: GPU_CHECK_BUDGET_S=555 bash benchmarks/gpu_check.sh --quality-only
# --shared-data .shared-data, carrying .whl and .shared-data (58 MiB together on 2026-11-28;
# with the tracked files that is under the 64 MiB a device call may send).
set -euo pipefail
cd "$(dirname "$0")/.."

# faiss-cpu, umap-learn, pynndescent and dash, and what they need beyond the device's packages
PACKAGES=(faiss-cpu umap-learn pynndescent dash flask werkzeug blinker itsdangerous plotly retrying
          nest-asyncio importlib-metadata typing-extensions janus comm lazy-importer pydantic pydantic-core
          annotated-types typing-inspection)
PY="${PYTHON:-.venv/bin/python}"
PINS=$("$PY" - "${PACKAGES[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_wheels.sh: not installed in this environment: {', '.join(missing)} (run make test first)")
PYEOF
)
if [ "${1:-}" = "--print" ]; then
  echo "$PINS"
  exit 0
fi
rm -rf .whl.new && mkdir -p .whl.new .shared-data  # .whl and .shared-data are in .gitignore
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl.new $PINS
rm -rf .whl && mv .whl.new .whl  # only once every wheel came: one version of each
SHARED="${ICE_SHARED_DATA:-../shared/data}"
cp "$SHARED/cifar10-jpg.tar.gz" .shared-data/
du -sh .whl .shared-data

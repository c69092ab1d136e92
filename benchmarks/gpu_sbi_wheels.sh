#!/bin/bash
# Adds sbi (E4's NPE baseline) and what it imports to .device/whl, as wheels for the offline GPU
# machine's Python 3.12: ../shared/device/prepare.sh carries Snakemake, POT, jsonschema and FrEIA
# but not these, and without them E4's three NPE jobs fail there. Versions as installed here (the
# project's pins). Run after prepare.sh, from anywhere in the repository:
#
#   ../shared/device/prepare.sh --mnist-only && bash benchmarks/gpu_sbi_wheels.sh
#
# It prints what the wheels add and the size that then travels (the device tool's limit: 64 MiB;
# with both datasets prepare.sh alone carries 62 MiB, hence --mnist-only).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [[ ! -d .device/whl ]]; then
  echo ".device/whl is missing: run ../shared/device/prepare.sh first" >&2
  exit 1
fi
py=${PYTHON:-python3}
# sbi 0.27's imports beyond what the GPU image has (torch, numpy, scipy, scikit-learn, matplotlib,
# pillow, tqdm, joblib): torch.utils.tensorboard needs tensorboard at import time.
names="sbi nflows zuko skorch tabulate tensorboard tensorboard-data-server absl-py grpcio
markdown protobuf werkzeug MarkupSafe"
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
before=$(du -sb .device/whl | cut -f1)
for n in $names; do
  v=$("$py" -m pip show "$n" 2>/dev/null | awk '/^Version:/{print $2}')
  if [[ -z $v ]]; then
    echo "$n is not installed here: python3 -m pip install -e . first" >&2
    exit 1
  fi
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      $plat -d .device/whl "$n==$v" >/dev/null 2>&1 \
    || "$py" -m pip wheel -q --no-deps -w .device/whl "$n==$v" >/dev/null 2>&1 \
    || { echo "no wheel for $n==$v" >&2; exit 1; }
done
after=$(du -sb .device/whl | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
dev=$(du -sb .device | cut -f1)
echo "sbi's wheels: +$(((after - before) / 1048576)) MiB; travels: .device $((dev / 1048576)) MiB +" \
  "tracked tree $((tracked / 1048576)) MiB = $(((dev + tracked) / 1048576)) MiB"

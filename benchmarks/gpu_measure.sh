#!/bin/bash
# The README's "On a GPU" measurement in one command, on a machine with one GPU and PyTorch but
# no network: ../shared/device/prepare.sh (or any copy of it) first builds .device/ (wheels, data,
# gpu-check.sh). From the project's root:
#
#   OUT=/some/folder bash benchmarks/gpu_measure.sh
#
# within BUDGET_S seconds (default 590) it
#   1. installs the carried wheels beside the machine's PyTorch (LOCAL=1: uses this Python as is)
#      and writes machine.json (GPU, CPU, torch, CUDA);
#   2. probes how many training processes share the GPU best (benchmarks/gpu_speed.py
#      --concurrency 1 4 8 -> gpu_concurrency.csv): the fewest within 10 % of the best summed
#      speed become the DAG's `--resources gpu_jobs=N`;
#   3. runs the default DAG from nothing with --cores $CORES (.device/gpu-check.sh) -> dag.log,
#      jobs.tsv, summary.txt, dmon.txt, results.tgz, and span.json (device, span_s, jobs_done,
#      jobs_total, and jobs_left: per rule, the jobs not finished), leaving TEST_S + BENCH_S
#      seconds for
#   4. the CUDA tests (pytest -m cuda tests/test_gpu.py) -> pytest_cuda.txt, and
#   5. benchmarks/gpu_speed.py -> gpu_speed.csv, gpu_speed.txt.
# Rehearse without a GPU: LOCAL=1 BUDGET_S=300 BENCH_S=60 CORES=2 SMK_ARGS="--configfile
# config/smoke.yaml" bash benchmarks/gpu_measure.sh
set -u
ROOT=$PWD
OUT=${OUT:-$ROOT/.device/out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-590}
BENCH_S=${BENCH_S:-90}
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
stamp() { echo "[$(($(date +%s) - T0)) s] $*"; }
if [[ ${LOCAL:-0} != 1 ]]; then
  stamp "install wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/whl/*.whl 2>&1 | grep -v -i warning | tail -3
  export PYTHONPATH=/tmp/site:$ROOT/src PATH=/tmp/site/bin:$PATH
fi
python3 - >"$OUT/machine.json" <<'EOF'
import json, os, platform, numpy, snakemake, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(json.dumps({
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__,
    "cuda": torch.version.cuda, "python": platform.python_version(),
    "numpy": numpy.__version__, "snakemake": snakemake.__version__,
}))
EOF
cat "$OUT/machine.json"
stamp "concurrency probe"
timeout -k 5 "${PROBE_S:-60}" python3 benchmarks/gpu_speed.py --models none --concurrency 1 4 8 \
  --concurrency-out "$OUT/gpu_concurrency.csv" >"$OUT/gpu_concurrency.txt" 2>&1
tail -4 "$OUT/gpu_concurrency.txt"
# The fewest jobs at once within 10 % of the best summed speed (profiles/default's default).
jobs=$(python3 -c "import pandas as pd, sys; t = pd.read_csv(sys.argv[1]); \
print(int(t[t.it_s_total >= 0.9 * t.it_s_total.max()].jobs.min()))" "$OUT/gpu_concurrency.csv" \
  2>/dev/null || echo "")
TEST_S=${TEST_S:-60}
dag_s=$(($(left) - TEST_S - BENCH_S))
stamp "DAG for at most $dag_s s"
LOCAL=1 SKIP_TESTS=1 DAG_S=$dag_s CORES=${CORES:-16} \
  SMK_ARGS="${SMK_ARGS:-} ${jobs:+--resources gpu_jobs=$jobs}" \
  bash .device/gpu-check.sh >"$OUT/gpu_check.txt" 2>&1
python3 - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
# The DAG's own wall-clock, as gpu-check.sh measures it around `snakemake` ("DAG end .. wall=..").
wall = int(re.findall(r"wall=(\d+) s", (out / "gpu_check.txt").read_text())[-1])
log = (out / "dag.log").read_text(errors="replace")
steps = re.findall(r"(\d+) of (\d+) steps", log)
done, total = map(int, steps[-1]) if steps else (0, None)
# Per rule, the jobs planned (the first "Job stats" table) less those finished: whether only
# NPE's trainings and what waits on them were left when the time ran out.
stats = re.search(r"^Job stats:\n.*?\n-+ +-+\n(.*?)\n(?:total|\n)", log, re.MULTILINE | re.DOTALL)
planned = {r: int(n) for r, n in re.findall(r"^(\w+) +(\d+)$", stats[1], re.MULTILINE)} if stats else {}
for rule in re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log, re.MULTILINE):
    planned[rule] = planned.get(rule, 0) - 1
machine = json.loads((out / "machine.json").read_text())
span = {"device": machine["gpu"] or "cpu", "span_s": wall, "jobs_done": done, "jobs_total": total,
        "jobs_left": {rule: n for rule, n in planned.items() if n > 0}}
(out / "span.json").write_text(json.dumps(span) + "\n")
print(json.dumps(span))
EOF
stamp "pytest -m cuda"
timeout -k 5 "$TEST_S" python3 -m pytest -q -m cuda tests/test_gpu.py -p no:cacheprovider \
  -o addopts="-ra" >"$OUT/pytest_cuda.txt" 2>&1
tail -4 "$OUT/pytest_cuda.txt"
stamp "benchmark for at most $(($(left) - 5)) s"
timeout -k 5 $(($(left) - 5)) python3 benchmarks/gpu_speed.py --seconds "${BENCH_SECONDS:-0.3}" \
  --out "$OUT/gpu_speed.csv" >"$OUT/gpu_speed.txt" 2>&1
tail -22 "$OUT/gpu_speed.txt"
stamp "done"

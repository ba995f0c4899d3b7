#!/usr/bin/env bash
# The device check for the Triton instance norm, prepared to run once on a lent H100/H200
# (Python 3.12, torch 2.11, triton 3.6 preinstalled, no network), from the repository root:
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# 1. versions and the GPU, 2. the Triton tests compiled on CUDA (no interpreter),
# 3. benchmarks/bench_instance_norm.py. Everything lands in $OUT; each step has its own time
# limit and a failing step does not stop the next. Exit status: non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # run from the tree, no install needed
export TRITON_INTERPRET=0 INSTYLE_TEST_DEVICE=cuda
PY="${PYTHON:-python}"
TEST_LIMIT_S="${TEST_LIMIT_S:-240}"
BENCH_LIMIT_S="${BENCH_LIMIT_S:-240}"
status=0

step() {  # step NAME LIMIT_S CMD...: run CMD with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

step env 60 bash -c "date -u; nvidia-smi; $PY - <<'PYEOF'
import platform, torch, triton
print('python', platform.python_version(), 'torch', torch.__version__, 'triton', triton.__version__)
print('device', torch.cuda.get_device_name(0), 'SMs', torch.cuda.get_device_properties(0).multi_processor_count)
PYEOF"

# A first launch of every kernel family on tiny tensors: an API or compile error shows here in
# seconds, with its own log, before the longer steps.
step smoke 120 "$PY" - <<'PYEOF'
import torch
from instyle.ops.triton import instance_norm as tin
x = torch.randn(2, 4, 33, 35, device="cuda", requires_grad=True)
w = torch.randn(4, device="cuda", requires_grad=True)
for kw in ({}, {"max_tile": 64, "min_programs": 64}):
    y = tin.instance_norm_triton(x, None, None, w, None, True, 0.1, 1e-5, "relu", None, **kw)
    y.backward(torch.randn_like(y))
    torch.cuda.synchronize()
    print(kw, "ok", float(y.float().abs().max()))
PYEOF

if "$PY" -c "import pytest" 2>/dev/null; then
    step tests "$TEST_LIMIT_S" "$PY" -m pytest tests/test_instance_norm_triton.py -q -p no:cacheprovider \
        -o addopts="" -rs --junitxml="$OUT/tests.xml"
else
    echo "== tests: pytest is not installed here" | tee -a "$OUT/summary.txt"
    status=1
fi

if [ -f benchmarks/bench_instance_norm.py ]; then
    step bench "$BENCH_LIMIT_S" "$PY" benchmarks/bench_instance_norm.py
    cp -r benchmarks/results/. "$OUT/bench_results/" 2>/dev/null || true
else
    echo "== bench: benchmarks/bench_instance_norm.py is not in this tree" | tee -a "$OUT/summary.txt"
    status=1
fi
exit "$status"

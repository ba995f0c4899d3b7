#!/usr/bin/env bash
# Short single-style runs that choose the bundled training's settings (issue #19, part 5): each run
# trains one painting for ITERATIONS steps with the given extra flags, then
# benchmarks/bench_bundled_vs_stl.py scores it against its painting (style and content distances).
#   bash tools/sweep_bundled.sh LABEL STYLE [FLAGS ...]      e.g. sw40 udnie --style-weight 40
# One thread per run (the CPU is shared), nice 5; the command is logged in out/sweep/LABEL.command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
SHARED=${SHARED:-/work/shared/data}
ITERATIONS=${ITERATIONS:-300}
label=$1; style=$2; shift 2
mkdir -p out/sweep
cmd=(nice -n 5 "$PY" -m instyle train --style "$SHARED/styles/$style.jpg" -o "out/sweep/$label.safetensors"
     --width 0.375 --num-residual 3 --save-dtype fp16 --iterations "$ITERATIONS" --sample-every 0
     --log-dir "out/sweep/$label" "$@")
echo "${cmd[*]}" > "out/sweep/$label.command"
start=$(date +%s)
OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src "${cmd[@]}" > "out/sweep/$label.log" 2>&1
echo "trained in $(( $(date +%s) - start )) s" >> "out/sweep/$label.log"
OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src nice -n 5 "$PY" benchmarks/bench_bundled_vs_stl.py --no-stl --styles "$style" \
    --model "$label=out/sweep/$label.safetensors" --note "sweep $label: $ITERATIONS steps $*" >> "out/sweep/$label.log" 2>&1

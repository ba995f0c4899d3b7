#!/usr/bin/env bash
# Trains the bundled multi-style model (issue #19, part 4): the four bundled paintings plus six
# public-domain paintings from ../shared/data/train/paintings, one TransformerNet with a (gamma, beta)
# row per style, written as fp16 safetensors to out/multi/multi.safetensors (its style targets, which
# a multi-style file always carries, then stored in bf16 to fit the 6 MB budget:
# tools/pack_style_targets.py). The exact command is logged in out/multi/multi.command.
#   bash tools/train_bundled_multi.sh            (again with RESUME=1 to continue after a stop)
# Each style is named by its painting's file stem, so the ten are copied (bytes unchanged) under
# short names into out/multi/paintings (tools/make_style_thumbs.py --paintings out/multi/paintings).
# One thread (the CPU is shared), nice 5, checkpoints every 100 steps. Settings: see MODEL_CARD.md (chosen by tools/sweep_bundled.sh, issue #19 part 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
SHARED=${SHARED:-../shared/data}
[ -d "$SHARED" ] || SHARED=/work/shared/data
ITERATIONS=${ITERATIONS:-3000}  # the bundled run: 3000 (46 min here)
STYLE_WEIGHT=${STYLE_WEIGHT:-12}
OUT=out/multi
mkdir -p "$OUT/paintings"
# short name -> file in ../shared/data/train/paintings (paintings.csv: artist, title, date, licence)
declare -A NEW=(
    [takiyasha]=wmb_kuniyoshi-takiyasha-the-witch-and-the.jpg          # ukiyo-e, Kuniyoshi c.1844
    [water_lilies]=nst_monet-water-lilies-1919.jpg                    # impressionism, Monet 1919
    [grande_jatte]=artwall_seurat-oil-sketch-for-a-sunday-on-la-grande-1884.jpg  # pointillism, Seurat 1884
    [flower_box]=wmb_macke-blumenkasten-mit.jpg                       # expressionism, Macke (d. 1914)
    [tableau_no2]=adain_mondrian-tableau-no-2.jpg                     # cubism/abstraction, Mondrian 1913
    [night_watch]=wmb_rembrandt-the-night-watch.jpg                   # Baroque, Rembrandt 1642
)
styles=()
for name in starry_night composition_vii udnie cezanne; do
    cp "$SHARED/styles/$name.jpg" "$OUT/paintings/$name.jpg"
    styles+=("$OUT/paintings/$name.jpg")
done
for name in takiyasha water_lilies grande_jatte flower_box tableau_no2 night_watch; do
    cp "$SHARED/train/paintings/${NEW[$name]}" "$OUT/paintings/$name.jpg"
    styles+=("$OUT/paintings/$name.jpg")
done
cmd=(nice -n 5 "$PY" -m instyle train --style "${styles[@]}" -o "$OUT/multi.safetensors"
     --width 0.375 --num-residual 3 --save-dtype fp16 --iterations "$ITERATIONS"
     --style-weight "$STYLE_WEIGHT" --checkpoint-every 100 --sample-every 1000 --log-dir "$OUT/train"
     ${EXTRA:-})
[ "${RESUME:-0}" = 1 ] && cmd+=(--resume)
echo "${cmd[*]}" > "$OUT/multi.command"
OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src "${cmd[@]}" >> "$OUT/multi.log" 2>&1
PYTHONPATH=$PWD/src "$PY" tools/pack_style_targets.py "$OUT/multi.safetensors" --dtype bfloat16 >> "$OUT/multi.log" 2>&1
echo "done: $OUT/multi.safetensors ($(stat -c %s "$OUT/multi.safetensors") bytes); bundle it with:"
echo "  cp $OUT/multi.safetensors src/instyle/styles/ && $PY tools/make_style_thumbs.py --paintings $OUT/paintings && $PY tools/model_card.py"

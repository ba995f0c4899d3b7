"""Compile the Triton instance-norm kernels to sm_90 cubin without a GPU: catches what the
interpreter forgives (types, layouts, constexpr use). Run with TRITON_INTERPRET=0; the test
test_kernels_compile_for_sm90_without_a_gpu runs it in a subprocess."""

import itertools

import triton

from instyle.ops.triton import instance_norm as tin


def _sm90_plans():
    """(kernel, constexprs, num_warps) for the variants the launcher picks on H100-class shapes, at
    every num_warps the tuner may time."""
    variants = []
    for n, c, s, channels_last in [(8, 64, 256 * 256, False), (8, 64, 64 * 64, False), (1, 3, 1024 * 1024, False),
                                   (8, 128, 32 * 32, True), (4, 512, 7 * 7, False)]:
        plan = tin._plan(n, c, s, channels_last, 0, 264)
        single = plan.single_tile or plan.chunk <= plan.block_s
        modes = [int(tin.FUSED)] if plan.splits == 1 else [int(tin.PARTIAL), int(tin.APPLY)]
        for mode, warps in itertools.product(modes, sorted({launch.num_warps for launch in tin.candidates(plan)})):
            common = dict(BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, SINGLE_TILE=single, MODE=mode)
            for fused in (True, False):
                variants.append((tin._instance_norm_fwd_kernel, dict(common, HAS_WEIGHT=fused, HAS_BIAS=fused,
                                                                      HAS_RESIDUAL=fused, RELU=fused), warps))
            for relu in (True, False):  # without the ReLU's select, triton 3.6 rewrote the loop and failed
                variants.append((tin._instance_norm_bwd_kernel, dict(common, USE_INPUT_STATS=True, HAS_WEIGHT=True,
                                                                      RELU=relu, WRITE_DR=relu, BLOCK_SPLITS=16),
                                 warps))
    # The plain variants: eval mode, no affine, no fusions.
    plan = tin._plan(8, 64, 64 * 64, False, 0, 264)
    plain = dict(BLOCK_C=plan.block_c, BLOCK_S=plan.block_s, SINGLE_TILE=True, MODE=int(tin.APPLY))
    variants.append((tin._instance_norm_fwd_kernel, dict(plain, HAS_WEIGHT=False, HAS_BIAS=False, HAS_RESIDUAL=False,
                                                          RELU=False), plan.num_warps))
    variants.append((tin._instance_norm_bwd_kernel, dict(plain, USE_INPUT_STATS=False, HAS_WEIGHT=False, RELU=False,
                                                          WRITE_DR=False, BLOCK_SPLITS=1), plan.num_warps))
    variants.append((tin._instance_norm_stats_combine_kernel, dict(BLOCK_P=64, BLOCK_SPLITS=32), 4))
    return variants


_INT_ARGS = {"C", "S", "P"}  # capitalized like pointers, but sizes


def compile_sm90() -> None:
    """Compile every planned variant to cubin for sm_90; run with TRITON_INTERPRET=0."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # Both data types: triton 3.6 failed on the fp32 backward with a loop (H100, 2026-11-26) and not on bf16.
    for (kernel, constexprs, num_warps), data in itertools.product(_sm90_plans(), ("*bf16", "*fp32")):
        signature = {}
        for name in kernel.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name == "PartExp":
                signature[name] = "*i32"
            elif name[0].isupper() and name not in _INT_ARGS:
                signature[name] = data if name in ("X", "Y", "R", "DY", "DX", "DR", "W", "B") else "*fp32"
            else:
                signature[name] = "fp32" if name == "eps" else "i32"
        src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        options = {"num_warps": num_warps, "enable_fp_fusion": False}  # as the launchers compile them
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
        assert compiled.asm["cubin"]


if __name__ == "__main__":
    compile_sm90()

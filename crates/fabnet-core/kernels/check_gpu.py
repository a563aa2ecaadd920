#!/usr/bin/env python3
"""Standalone GPU check of kernels/warp.cu, without Rust.

Loads warp.cu unchanged with CuPy's RawModule (NVRTC), runs the forward and
backward kernels on random inputs and compares them with PyTorch's CUDA
F.grid_sample / F.interpolate(mode="bilinear") and autograd: outputs, input
gradients and grid gradients, fp32 (max error relative to the expected
tensor's scale < 1e-5) and fp64 (< 1e-10). Then times both on the benchmark
shapes. Prints one JSON object; exits 0 when every check passes, 1 when one
fails, 2 when CuPy or a CUDA device is missing.

Run: python3 crates/fabnet-core/kernels/check_gpu.py [--no-timing] [--ptx FILE]
With --ptx, the kernels come from a PTX file that nvcc made (as build.rs does)
instead of NVRTC.
Needs: a CUDA GPU, torch with CUDA, cupy.

Without a GPU, `--emulate-cpu` compiles warp.cu with g++ and
cuda_cpu_stub.h into a shared library, runs every kernel sequentially on the
CPU through ctypes, and applies the same checks against PyTorch on the CPU
(same tolerances, no timing). That checks the kernels' arithmetic and this script's logic, not
CUDA itself.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 256
PADDING = {"zeros": 0, "border": 1}
MODE = {"bilinear": 0, "nearest": 1}
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def rel_err(ours, expected):
    """max |ours - expected| / max(1, max |expected|)."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return (ours - expected).abs().max().item() / scale if expected.numel() else 0.0


class Kernels:
    def __init__(self, cp, ptx=None):
        self.cp = cp
        if ptx:
            # The artifact build.rs makes: nvcc --ptx, loaded by the driver.
            self.module = cp.RawModule(path=ptx)
        else:
            with open(os.path.join(HERE, "warp.cu")) as f:
                src = f.read()
            self.module = cp.RawModule(code=src, options=("-std=c++14",))

    def launch(self, name, work_items, args):
        cp = self.cp
        blocks = max(1, min((work_items + THREADS - 1) // THREADS, 1 << 20))
        fn = self.module.get_function(name)
        # Run on torch's current stream so ordering with torch ops holds.
        stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)  # noqa: deprecated in CuPy 14, still works
        with stream:
            fn((blocks,), (THREADS,), args)

    def arr(self, t):
        return self.cp.asarray(t)  # zero-copy via __cuda_array_interface__

    def grid_sample(self, x, grid, padding, align_corners, mode):
        n, c, h, w = x.shape
        _, ho, wo, _ = grid.shape
        out = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device)
        i32 = np.int32
        self.launch(
            f"grid_sample_fwd_{SUFFIX[x.dtype]}",
            n * ho * wo,
            (self.arr(x), self.arr(grid), self.arr(out), i32(n), i32(c), i32(h), i32(w), i32(ho),
             i32(wo), i32(PADDING[padding]), i32(align_corners), i32(MODE[mode])),
        )
        return out

    def grid_sample_bwd(self, grad_out, x, grid, padding, align_corners, mode):
        n, c, h, w = x.shape
        _, ho, wo, _ = grid.shape
        gi = torch.zeros_like(x)
        gg = torch.zeros_like(grid)
        i32 = np.int32
        self.launch(
            f"grid_sample_bwd_{SUFFIX[x.dtype]}",
            n * ho * wo,
            (self.arr(grad_out), self.arr(x), self.arr(grid), self.arr(gi), self.arr(gg), i32(n),
             i32(c), i32(h), i32(w), i32(ho), i32(wo), i32(PADDING[padding]), i32(align_corners),
             i32(MODE[mode])),
        )
        return gi, gg

    def grid_sample_bwd_grid_only(self, grad_out, x, grid, padding, align_corners):
        """Backward with a null input-gradient pointer (the model's case)."""
        n, c, h, w = x.shape
        _, ho, wo, _ = grid.shape
        gg = torch.zeros_like(grid)
        i32 = np.int32
        self.launch(
            f"grid_sample_bwd_{SUFFIX[x.dtype]}",
            n * ho * wo,
            (self.arr(grad_out), self.arr(x), self.arr(grid), np.uint64(0), self.arr(gg), i32(n),
             i32(c), i32(h), i32(w), i32(ho), i32(wo), i32(PADDING[padding]), i32(align_corners),
             i32(0)),
        )
        return gg

    def upsample(self, x, oh, ow, align_corners):
        n, c, h, w = x.shape
        out = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
        i32 = np.int32
        self.launch(
            f"upsample_bilinear2d_fwd_{SUFFIX[x.dtype]}",
            n * c * oh * ow,
            (self.arr(x), self.arr(out), i32(n * c), i32(h), i32(w), i32(oh), i32(ow),
             i32(align_corners)),
        )
        return out

    def upsample_bwd(self, g, h, w, align_corners):
        n, c, oh, ow = g.shape
        gx = torch.zeros((n, c, h, w), dtype=g.dtype, device=g.device)
        i32 = np.int32
        self.launch(
            f"upsample_bilinear2d_bwd_{SUFFIX[g.dtype]}",
            n * c * oh * ow,
            (self.arr(g), self.arr(gx), i32(n * c), i32(h), i32(w), i32(oh), i32(ow),
             i32(align_corners)),
        )
        return gx


class EmulatedKernels(Kernels):
    """warp.cu compiled for the CPU with cuda_cpu_stub.h, called via ctypes."""

    def __init__(self, workdir):
        lib = os.path.join(workdir, "warp_emulated.so")
        src = os.path.join(workdir, "warp_emulated.cpp")
        with open(src, "w") as f:
            for name in ("cuda_cpu_stub.h", "warp.cu"):
                with open(os.path.join(HERE, name)) as part:
                    f.write(part.read() + "\n")
        subprocess.run(["g++", "-std=c++14", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                        "-o", lib, src], check=True)
        self.lib = ctypes.CDLL(lib)

    def launch(self, name, work_items, args):
        fn = getattr(self.lib, name)
        fn.restype = None

        def c_arg(a):
            if isinstance(a, np.int32):
                return ctypes.c_int(int(a))
            if isinstance(a, np.uint64):  # a null pointer
                return ctypes.c_void_p(int(a) or None)
            return a

        fn(*[c_arg(a) for a in args])

    def arr(self, t):
        assert t.is_contiguous()
        return ctypes.c_void_p(t.data_ptr())


def check_grid_sample(k, gen, dtype, shape, out_hw, padding, align_corners, mode):
    n, c, h, w = shape
    ho, wo = out_hw
    dev = DEVICE
    x = torch.randn(shape, generator=gen, dtype=dtype, device=dev)
    grid = (torch.rand((n, ho, wo, 2), generator=gen, dtype=dtype, device=dev) * 2 - 1) * 1.2
    # A few points exactly on the border.
    flat = grid.view(-1, 2)
    flat[0] = torch.tensor([-1.0, -1.0], dtype=dtype)
    flat[-1] = torch.tensor([1.0, 1.0], dtype=dtype)
    xr = x.clone().requires_grad_()
    gr = grid.clone().requires_grad_()
    ref = F.grid_sample(xr, gr, mode=mode, padding_mode=padding, align_corners=bool(align_corners))
    go = torch.randn(ref.shape, generator=gen, dtype=dtype, device=dev)
    ref.backward(go)
    out = k.grid_sample(x, grid, padding, align_corners, mode)
    gi, gg = k.grid_sample_bwd(go, x, grid, padding, align_corners, mode)
    errs = {
        "output": rel_err(out, ref.detach()),
        "grad_input": rel_err(gi, xr.grad),
        "grad_grid": rel_err(gg, gr.grad),
    }
    if mode == "bilinear":
        gg_only = k.grid_sample_bwd_grid_only(go, x, grid, padding, align_corners)
        errs["grad_grid_only"] = rel_err(gg_only, gr.grad)
    return errs


def check_non_finite(k, dtype):
    """NaN / inf grid points must sample 0 and pass no gradient."""
    x = torch.arange(1, 13, dtype=dtype, device=DEVICE).reshape(1, 1, 3, 4)
    nan, inf = float("nan"), float("inf")
    grid = torch.tensor([[[[nan, 0.0], [0.0, inf], [-inf, 0.0], [0.25, -0.5]]]], dtype=dtype,
                        device=DEVICE)
    worst = 0.0
    for padding in PADDING:
        for ac in (0, 1):
            out = k.grid_sample(x, grid, padding, ac, "bilinear").flatten()
            gi, gg = k.grid_sample_bwd(torch.ones_like(out).reshape(1, 1, 1, 4), x, grid, padding,
                                       ac, "bilinear")
            worst = max(worst, out[:3].abs().max().item(), gg.flatten()[:6].abs().max().item())
            worst = max(worst, abs(gi.sum().item() - 1.0))
            if not torch.isfinite(out[3]).item():
                worst = float("inf")
    return {"non_finite_max_abs": worst}


def check_upsample(k, gen, dtype, shape, out_hw, align_corners):
    n, c, h, w = shape
    oh, ow = out_hw
    x = torch.randn(shape, generator=gen, dtype=dtype, device=DEVICE)
    xr = x.clone().requires_grad_()
    ref = F.interpolate(xr, size=(oh, ow), mode="bilinear", align_corners=bool(align_corners))
    g = torch.randn(ref.shape, generator=gen, dtype=dtype, device=DEVICE)
    ref.backward(g)
    return {
        "output": rel_err(k.upsample(x, oh, ow, align_corners), ref.detach()),
        "grad_input": rel_err(k.upsample_bwd(g, h, w, align_corners), xr.grad),
    }


def time_ms(fn, iters=20):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def timings(k):
    rows = []
    gen = torch.Generator(device="cuda").manual_seed(1)
    for n, c, s in [(32, 3, 64), (32, 3, 256)]:
        x = torch.rand((n, c, s, s), generator=gen, device="cuda")
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, s, device="cuda"),
                                torch.linspace(-1, 1, s, device="cuda"), indexing="ij")
        grid = (torch.stack([xs, ys], -1).expand(n, s, s, 2)
                + 0.1 * (torch.rand((n, s, s, 2), generator=gen, device="cuda") * 2 - 1)).clamp(-1, 1)
        grid = grid.contiguous()
        go = torch.ones((n, c, s, s), device="cuda")
        xr, gr = x.clone().requires_grad_(), grid.clone().requires_grad_()

        def torch_fwd_bwd():
            out = F.grid_sample(xr, gr, mode="bilinear", padding_mode="zeros", align_corners=True)
            out.backward(go)
            xr.grad = None
            gr.grad = None

        def ours_fwd_bwd():
            k.grid_sample(x, grid, "zeros", 1, "bilinear")
            k.grid_sample_bwd(go, x, grid, "zeros", 1, "bilinear")

        name = f"grid_sample {n}x{c}x{s}x{s}"
        rows.append({"case": f"{name} fwd", "unit": "ms/iter",
                     "ours": time_ms(lambda: k.grid_sample(x, grid, "zeros", 1, "bilinear")),
                     "reference": time_ms(lambda: F.grid_sample(
                         x, grid, mode="bilinear", padding_mode="zeros", align_corners=True))})
        rows.append({"case": f"{name} fwd+bwd", "unit": "ms/iter",
                     "ours": time_ms(ours_fwd_bwd), "reference": time_ms(torch_fwd_bwd)})
    for n, c, s in [(32, 256, 8), (32, 32, 64)]:
        x = torch.rand((n, c, s, s), generator=gen, device="cuda")
        g = torch.ones((n, c, 2 * s, 2 * s), device="cuda")
        xr = x.clone().requires_grad_()

        def torch_up():
            out = F.interpolate(xr, size=(2 * s, 2 * s), mode="bilinear", align_corners=False)
            out.backward(g)
            xr.grad = None

        def ours_up():
            k.upsample(x, 2 * s, 2 * s, 0)
            k.upsample_bwd(g, s, s, 0)

        rows.append({"case": f"upsample_bilinear2d {n}x{c}x{s}x{s} x2 fwd+bwd", "unit": "ms/iter",
                     "ours": time_ms(ours_up), "reference": time_ms(torch_up)})
    return rows


DEVICE = "cuda"


def main():
    global DEVICE
    emulate = "--emulate-cpu" in sys.argv
    workdir = tempfile.TemporaryDirectory()
    if emulate:
        DEVICE = "cpu"
        k = EmulatedKernels(workdir.name)
        versions = {"device": "cpu emulation (g++ + cuda_cpu_stub.h)", "torch": torch.__version__}
    else:
        try:
            import cupy as cp
        except ImportError as e:
            print(json.dumps({"ok": False, "error": f"cupy is not available: {e}"}))
            return 2
        if not torch.cuda.is_available():
            print(json.dumps({"ok": False, "error": "torch sees no CUDA device"}))
            return 2
        ptx = sys.argv[sys.argv.index("--ptx") + 1] if "--ptx" in sys.argv else None
        k = Kernels(cp, ptx)
        versions = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cupy": cp.__version__, "kernels": f"nvcc PTX {ptx}" if ptx else "NVRTC"}
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    checks = []
    for dtype in (torch.float32, torch.float64):
        for padding in PADDING:
            for ac in (0, 1):
                for mode in MODE:
                    for shape, out_hw in [((2, 3, 17, 23), (19, 13)), ((3, 1, 64, 48), (64, 48))]:
                        errs = check_grid_sample(k, gen, dtype, shape, out_hw, padding, ac, mode)
                        checks.append({"op": "grid_sample", "dtype": str(dtype), "shape": shape,
                                       "out": out_hw, "padding": padding, "align_corners": ac,
                                       "mode": mode, "errors": errs,
                                       "ok": all(v < TOL[dtype] for v in errs.values())})
        for ac in (0, 1):
            for shape, out_hw in [((2, 3, 8, 10), (16, 20)), ((1, 4, 5, 3), (7, 11)),
                                  ((2, 2, 9, 7), (4, 3)), ((1, 2, 3, 4), (1, 1))]:
                errs = check_upsample(k, gen, dtype, shape, out_hw, ac)
                checks.append({"op": "upsample_bilinear2d", "dtype": str(dtype), "shape": shape,
                               "out": out_hw, "align_corners": ac, "errors": errs,
                               "ok": all(v < TOL[dtype] for v in errs.values())})
        errs = check_non_finite(k, dtype)
        checks.append({"op": "grid_sample non-finite grid", "dtype": str(dtype), "errors": errs,
                       "ok": errs["non_finite_max_abs"] == 0.0})
    if not emulate:
        torch.cuda.synchronize()
    report = {
        **versions,
        "ok": all(c["ok"] for c in checks),
        "failed": [c for c in checks if not c["ok"]],
        "checks_run": len(checks),
        "worst_fp32_error": max(max(c["errors"].values()) for c in checks
                                if c["dtype"] == str(torch.float32)),
    }
    if not emulate and "--no-timing" not in sys.argv:
        report["timing"] = timings(k)
        report["timing_note"] = ("CUDA events, mean over 20 iterations after warm-up; ours = our "
                                 "kernels launched through CuPy, reference = PyTorch with autograd")
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

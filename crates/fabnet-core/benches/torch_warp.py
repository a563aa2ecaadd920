#!/usr/bin/python3
"""Times PyTorch's CPU grid_sample and bilinear interpolate on the cases of
benches/warp.rs, on 2 threads, and prints {"<case label>": ms_per_iter} as JSON.

Run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-core/benches/torch_warp.py [--quick]
(benches/warp.rs runs it itself, so both sides are measured in one run).
"""
import json
import sys
import time

import torch
import torch.nn.functional as F

THREADS = 2
GS_CASES = [("32x3x64x64", 32, 3, 64, 64), ("32x3x256x256", 32, 3, 256, 256)]
UP_CASES = [("32x256x8x8 x2", 32, 256, 8, 8), ("32x32x64x64 x2", 32, 32, 64, 64)]


def median_ms(fn, quick):
    """Median wall time of fn in ms, after warm-up, over >= 10 runs and >= 1 s."""
    for _ in range(2):
        fn()
    times = []
    budget = 0.3 if quick else 2.0
    start = time.perf_counter()
    while len(times) < (3 if quick else 10) or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    times.sort()
    return 1e3 * times[len(times) // 2]


def warp_grid(n, h, w):
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ident = torch.stack([xs, ys], dim=-1).expand(n, h, w, 2)
    flow = (torch.rand(n, h, w, 2) * 2 - 1) * 0.1
    return (ident + flow).clamp(-1, 1)


def main():
    quick = "--quick" in sys.argv
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    res = {}
    for name, n, c, h, w in GS_CASES:
        x = torch.rand(n, c, h, w, requires_grad=True)
        g = warp_grid(n, h, w).requires_grad_()

        def fwd():
            with torch.no_grad():
                F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)

        def fwd_bwd():
            out = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=True)
            out.backward(torch.ones_like(out))
            x.grad = None
            g.grad = None

        res[f"grid_sample {name} fwd"] = median_ms(fwd, quick)
        res[f"grid_sample {name} fwd+bwd"] = median_ms(fwd_bwd, quick)
    for name, n, c, h, w in UP_CASES:
        x = torch.rand(n, c, h, w, requires_grad=True)

        def up_fwd():
            with torch.no_grad():
                F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)

        def up_fwd_bwd():
            out = F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)
            out.backward(torch.ones_like(out))
            x.grad = None

        res[f"upsample_bilinear2d {name} fwd"] = median_ms(up_fwd, quick)
        res[f"upsample_bilinear2d {name} fwd+bwd"] = median_ms(up_fwd_bwd, quick)
    res["torch_version"] = torch.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Times the PyTorch FAb-Net of tests/goldens/make_model_goldens.py on one case of benches/model.rs,
on 2 threads, and prints {"fwd_ms", "fwd_bwd_ms", "peak_mib"} as JSON.

One case per process, so that the peak resident memory (VmHWM) is that case's alone:

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-core/benches/torch_model.py \
        --preset small --batch 32 [--iters 5] [--budget-s 20] [--skip-mask]

The step is the 1-source training step of benches/model.rs: train-mode reconstruct (encoder on
target and source, flow and mask decoders, grid_sample), per-sample L1, mean; fwd+bwd adds
loss.backward(). benches/model.rs runs this script itself.

With --breakdown it instead times each op of that step alone (shapes recorded by forward hooks
during one step), fwd and fwd+bwd (backward of the output's sum), and prints
{"<category>": [fwd_ms, fwd_bwd_ms]} per training step, with the categories of benches/model.rs.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "goldens"))
from make_model_goldens import (FabNetTorch, Upsample2x, curriculum_loss,  # noqa: E402
                                init_pytorch04_, per_sample_l1)

THREADS = 2
PRESETS = {"paper": 256, "small": 64, "tiny": 32}


def peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def median_ms(fn, iters, budget_s):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < iters or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def category(module):
    if isinstance(module, nn.Conv2d):
        return "conv 4x4 stride 2 (encoder)" if module.stride[0] == 2 else "conv 3x3 (decoders)"
    if isinstance(module, nn.BatchNorm2d):
        return "batchnorm (train)"
    if isinstance(module, (nn.LeakyReLU, nn.ReLU, nn.Tanh)):
        return "leaky relu / relu / tanh"
    if isinstance(module, Upsample2x):
        return "upsample x2"
    return None


def breakdown(model, target, source, iters):
    """Times every leaf op of one training step alone; ms per step by category."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, inp, out: calls.append((m, inp[0].shape)))
             for m in model.modules() if category(m) is not None]
    model.reconstruct(target, [source])
    for h in hooks:
        h.remove()
    # The decoders' input ReLU acts on the (B, 512, 1, 1) code; the encoder's first conv
    # takes the image, which needs no gradient.
    first_conv = model.encoder[0]
    totals = {}
    for module, shape in calls:
        x = torch.rand(shape, requires_grad=module is not first_conv)

        def fwd():
            return module(x)

        def fwd_bwd():
            module(x).sum().backward()
            x.grad = None
            for p in module.parameters():
                p.grad = None

        f = median_ms(fwd, iters, 0.0)
        b = median_ms(fwd_bwd, iters, 0.0)
        t = totals.setdefault(category(module), [0.0, 0.0])
        t[0] += f
        t[1] += b
    grid = (torch.rand(target.shape[0], target.shape[2], target.shape[3], 2) * 2 - 1)
    grid.requires_grad_()
    src = source.clone().requires_grad_()

    def gs():
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def gs_bwd():
        gs().sum().backward()
        src.grad = None
        grid.grad = None

    totals["grid_sample"] = [median_ms(gs, iters, 0.0), median_ms(gs_bwd, iters, 0.0)]
    return totals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=10.0)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--skip-mask", action="store_true",
                        help="leave out the mask decoder, whose output one source discards")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    size = PRESETS[args.preset]
    cfg = dict(image_size=size, base_width=32, embedding_dim=256, bn_gamma_init="uniform",
               upsample_align_corners=False)
    model = FabNetTorch(cfg)
    init_pytorch04_(model, "uniform")
    model.train()
    target = torch.rand(args.batch, 3, size, size)
    source = torch.rand(args.batch, 3, size, size)

    if args.breakdown:
        print(json.dumps(breakdown(model, target, source, args.iters)))
        return

    if args.skip_mask:
        # One source: the fused image is the warped source and the mask decoder's output is
        # discarded, so running it only costs time.
        model.mask = nn.Identity()

    def forward():
        fused, _, _, _ = model.reconstruct(target, [source])
        return curriculum_loss(per_sample_l1(fused, target), 0.0, 1.0)

    def forward_backward():
        forward().backward()
        for p in model.parameters():
            p.grad = None

    fwd = median_ms(forward, args.iters, args.budget_s)
    fwd_bwd = median_ms(forward_backward, args.iters, args.budget_s)
    print(json.dumps({"fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd, "peak_mib": peak_mib()}))


if __name__ == "__main__":
    main()

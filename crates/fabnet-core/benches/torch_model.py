#!/usr/bin/python3
"""Times the PyTorch FAb-Net of tests/goldens/make_model_goldens.py on one case of benches/model.rs,
on 2 threads, and prints {"fwd_ms", "fwd_bwd_ms", "peak_mib"} as JSON.

One case per process, so that the peak resident memory (VmHWM) is that case's alone:

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-core/benches/torch_model.py \
        --preset small --batch 32 [--iters 5] [--budget-s 20]

The step is the 1-source training step of benches/model.rs: train-mode reconstruct (encoder on
target and source, flow and mask decoders, grid_sample), per-sample L1, mean; fwd+bwd adds
loss.backward(). benches/model.rs runs this script itself.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "goldens"))
from make_model_goldens import (FabNetTorch, curriculum_loss, init_pytorch04_,  # noqa: E402
                                per_sample_l1)

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=10.0)
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

#!/usr/bin/python3
"""Times one FAb-Net training step in PyTorch: the `small` preset, batch 32,
one source, curriculum window [0, 0.5), torch.optim.SGD (lr 1e-3, momentum
0.9), on 2 threads. Prints {"step_ms": ...} as JSON.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-train/benches/torch_train_step.py \
        [--batch 32] [--iters 5]

benches/train_step.rs runs it in the same run as our step. The model is the
PyTorch FAb-Net of tests/goldens/make_model_goldens.py.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "goldens"))
from make_model_goldens import (FabNetTorch, curriculum_loss,  # noqa: E402
                                init_pytorch04_, per_sample_l1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = dict(image_size=64, base_width=32, embedding_dim=256, bn_gamma_init="uniform",
               upsample_align_corners=False)
    model = FabNetTorch(cfg)
    init_pytorch04_(model, "uniform")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.rand(args.batch, 3, 64, 64)
    source = torch.rand(args.batch, 3, 64, 64)

    def step():
        opt.zero_grad(set_to_none=True)
        fused, _, _, _ = model.reconstruct(target, [source])
        loss = curriculum_loss(per_sample_l1(fused, target), 0.0, 0.5)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"step_ms": 1e3 * times[len(times) // 2]}))


if __name__ == "__main__":
    main()

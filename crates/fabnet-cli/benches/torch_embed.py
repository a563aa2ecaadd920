#!/usr/bin/python3
"""Times the PyTorch FAb-Net encoder (tests/goldens/make_model_goldens.py's FabNetTorch) embedding a
batch in eval mode under torch.no_grad(), on 2 threads, and prints {"ms": median ms per batch}.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-cli/benches/torch_embed.py \
        --preset small --batch 32 [--iters 5] [--budget-s 10]

benches/embed.rs runs this script itself.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "tests", "goldens"))
from make_model_goldens import FabNetTorch, init_pytorch04_  # noqa: E402

PRESETS = {"paper": 256, "small": 64, "tiny": 32}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    size = PRESETS[args.preset]
    cfg = dict(image_size=size, base_width=32, embedding_dim=256, bn_gamma_init="uniform",
               upsample_align_corners=False)
    model = FabNetTorch(cfg)
    init_pytorch04_(model, "uniform")
    model.eval()
    x = torch.rand(args.batch, 3, size, size)
    with torch.no_grad():
        model.embed(x)  # warm-up
        times = []
        start = time.perf_counter()
        while len(times) < args.iters or (time.perf_counter() - start < args.budget_s
                                          and len(times) < 50):
            t0 = time.perf_counter()
            out = model.embed(x)
            times.append(time.perf_counter() - t0)
        assert out.shape == (args.batch, 256)
    times.sort()
    print(json.dumps({"ms": 1e3 * times[len(times) // 2]}))


if __name__ == "__main__":
    main()

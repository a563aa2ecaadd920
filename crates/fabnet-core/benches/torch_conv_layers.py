#!/usr/bin/python3
"""Times each conv of one `small` training step (batch 32) in PyTorch, as
benches/conv_layers.rs does ours: forward under no_grad, and forward plus the
backward of sum(y * r). Prints {layer: {"fwd": ms, "fwd+bwd": ms}} as JSON.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 crates/fabnet-core/benches/torch_conv_layers.py [--reps 15]
"""
import argparse
import json
import time

import torch

LAYERS = [
    ("enc1", 3, 32, 64, 4, 2, 1, False),
    ("enc2", 32, 64, 32, 4, 2, 1, True),
    ("enc3", 64, 128, 16, 4, 2, 1, True),
    ("enc4", 128, 256, 8, 4, 2, 1, True),
    ("enc5", 256, 256, 4, 4, 2, 1, True),
    ("enc6", 256, 256, 2, 4, 2, 1, True),
    ("dec1", 512, 256, 2, 3, 1, 1, True),
    ("dec2", 256, 256, 4, 3, 1, 1, True),
    ("dec3", 256, 128, 8, 3, 1, 1, True),
    ("dec4", 128, 64, 16, 3, 1, 1, True),
    ("dec5", 64, 32, 32, 3, 1, 1, True),
    ("dec6-flow", 32, 2, 64, 3, 1, 1, True),
    ("dec6-mask", 32, 1, 64, 3, 1, 1, True),
]


def best(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    out = {}
    for name, cin, cout, side, k, stride, padding, input_grad in LAYERS:
        x = torch.randn(args.batch, cin, side, side, requires_grad=input_grad)
        conv = torch.nn.Conv2d(cin, cout, k, stride, padding)
        r = torch.randn_like(conv(x))

        def forward():
            with torch.no_grad():
                conv(x)

        def forward_backward():
            (conv(x) * r).sum().backward()

        out[name] = {"fwd": best(args.reps, forward),
                     "fwd+bwd": best(args.reps, forward_backward)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

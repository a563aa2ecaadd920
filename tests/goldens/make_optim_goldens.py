"""Goldens for fabnet-train's optimisers: torch.optim.SGD (momentum 0.9) and
torch.optim.Adam applied for a few steps to fixed parameters and gradients.

Run from the workspace root with Debian's torch:
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tests/goldens/make_optim_goldens.py
Writes tests/goldens/optim/{sgd,adam}.safetensors (float64).
"""
import json
import os
import struct

import numpy as np
import torch

torch.set_num_threads(2)
torch.manual_seed(7)
STEPS = 5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim")


def write_safetensors(path, tensors):
    """Writes float64 arrays in the safetensors format (no extra dependency)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f8").tobytes()
        header[name] = {
            "dtype": "F64",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def run(name, make_opt):
    a0 = torch.randn(3, 4, dtype=torch.float64)
    b0 = torch.randn(5, dtype=torch.float64)
    grads = [(torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)) for _ in range(STEPS)]
    a = a0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = make_opt([a, b])
    out = {"a.init": a0.numpy(), "b.init": b0.numpy()}
    for step, (ga, gb) in enumerate(grads):
        opt.zero_grad()
        a.grad = ga.clone()
        # b gets no gradient on step 2: optimisers must leave it untouched.
        b.grad = None if step == 2 else gb.clone()
        opt.step()
        out[f"a.grad.{step}"] = ga.numpy()
        out[f"b.grad.{step}"] = gb.numpy()
        out[f"a.after.{step}"] = a.detach().clone().numpy()
        out[f"b.after.{step}"] = b.detach().clone().numpy()
    write_safetensors(os.path.join(OUT, f"{name}.safetensors"), out)


os.makedirs(OUT, exist_ok=True)
run("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
run("adam", lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8))
print("wrote", OUT)

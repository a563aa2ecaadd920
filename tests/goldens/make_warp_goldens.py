#!/usr/bin/python3
"""Writes the PyTorch goldens for fabnet-core's warp ops to tests/goldens/warp/.

Run from the workspace root:
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tests/goldens/make_warp_goldens.py

Each case is one safetensors file holding seeded random inputs, PyTorch's
output, a random upstream gradient and PyTorch's gradients with respect to
the input (and, for grid_sample, the grid). cases.json lists the files with
their options. The safetensors format is written by hand (the python
`safetensors` package is not installed here): an 8-byte little-endian header
length, a JSON header with dtype, shape and data_offsets, then raw
little-endian bytes.
"""
import json
import os
import struct
import zlib

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warp")


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        assert t.dtype == torch.float32
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def special_points(h, w, align_corners):
    """Grid points exactly on the border and on pixel centres (x, y)."""
    def centre(i, size):
        # Grid coordinate of pixel centre i.
        if align_corners:
            return -1.0 + 2.0 * i / (size - 1)
        return (2.0 * i + 1.0) / size - 1.0
    return [
        (-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (0.0, -1.0), (1.0, 0.0),
        (centre(0, w), centre(0, h)), (centre(w - 1, w), centre(h - 1, h)),
        (centre(1, w), 0.3), (0.2, centre(h - 2, h)),
    ]


def grid_case(name, n, c, h, w, ho, wo, padding, align_corners, mode="bilinear", spread=1.3):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(n, c, h, w, generator=g)
    grid = (torch.rand(n, ho, wo, 2, generator=g) * 2 - 1) * spread
    flat = grid.view(-1, 2)
    for k, (px, py) in enumerate(special_points(h, w, align_corners)):
        flat[(7 * k) % flat.shape[0]] = torch.tensor([px, py])
    x.requires_grad_()
    grid.requires_grad_()
    out = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    tensors = {"input": x, "grid": grid, "output": out, "grad_out": grad_out, "grad_input": x.grad}
    if mode == "bilinear":
        tensors["grad_grid"] = grid.grad
    save_safetensors(os.path.join(OUT, name + ".safetensors"), tensors)
    return {"file": name + ".safetensors", "op": "grid_sample", "mode": mode, "padding": padding,
            "align_corners": align_corners}


def upsample_case(name, n, c, h, w, oh, ow, align_corners):
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(n, c, h, w, generator=g).requires_grad_()
    out = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=align_corners)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    save_safetensors(os.path.join(OUT, name + ".safetensors"),
                     {"input": x, "output": out, "grad_out": grad_out, "grad_input": x.grad})
    return {"file": name + ".safetensors", "op": "upsample_bilinear2d", "out_h": oh, "out_w": ow,
            "align_corners": align_corners}


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [
        grid_case("gs_zeros_ac1", 2, 3, 5, 7, 4, 6, "zeros", True),
        grid_case("gs_zeros_ac0", 1, 1, 6, 4, 7, 3, "zeros", False),
        grid_case("gs_border_ac1", 2, 1, 4, 5, 5, 5, "border", True),
        grid_case("gs_border_ac0", 1, 3, 7, 5, 3, 8, "border", False),
        grid_case("gs_zeros_ac1_big", 3, 3, 16, 12, 10, 14, "zeros", True, spread=1.1),
        grid_case("gs_zeros_ac0_nearest", 2, 3, 5, 6, 4, 5, "zeros", False, mode="nearest"),
        grid_case("gs_border_ac1_nearest", 1, 2, 4, 7, 6, 3, "border", True, mode="nearest"),
        upsample_case("up_x2_ac0", 2, 3, 4, 5, 8, 10, False),
        upsample_case("up_x2_ac1", 2, 3, 4, 5, 8, 10, True),
        upsample_case("up_odd_ac0", 1, 2, 5, 3, 7, 11, False),
        upsample_case("up_odd_ac1", 1, 2, 5, 3, 7, 11, True),
        upsample_case("up_down_ac0", 1, 1, 6, 7, 4, 3, False),
        upsample_case("up_down_ac1", 1, 1, 6, 7, 4, 3, True),
        upsample_case("up_to1_ac1", 1, 2, 3, 4, 1, 1, True),
        upsample_case("up_to1_ac0", 1, 2, 3, 4, 1, 1, False),
    ]
    tmp = os.path.join(OUT, "cases.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"generated_by": "tests/goldens/make_warp_goldens.py", "torch": torch.__version__,
                   "cases": cases}, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(OUT, "cases.json"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference of the FAb-Net model and the generator of its parity goldens.

The module below is written from `../shared/docs/fabnet-reference.md` (sections 2, 3, 4 and 8),
independently of the Rust code in `crates/fabnet-core/src/model/`, so that agreement between
the two is evidence that both compute the paper's function.

Regenerate the goldens (Debian's python3-torch, CPU; takes a few seconds) with:

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 tests/goldens/make_model_goldens.py

It writes `tests/goldens/model/{tiny,small}_nf4.*`:

- `<case>_weights.safetensors`: the state dict with the official keys (running statistics
  included, `num_batches_tracked` left out), after 40 warm-up train-mode calls so that the
  running statistics are near the data's rather than the initial 0 / 1.
- `<case>_state_dict.pth`: the same state dict as a zip-format `torch.save`; `tiny` stores it
  under `state_dict` (like `nv2_curriculum.pth`), `small` under `state_dict_model` next to a
  linear probe under `state_dict` (like the `*_4views.pth` release files).
- `<case>_goldens.safetensors`: the inputs (`input.target`, `input.source{0,1,2}`, each
  `(B, 3, S, S)` in [0, 1]) and, for each upsample `align_corners` in {0, 1} and each mode
  in {train, eval}, under the prefix `ac{0,1}.{train,eval}.`:
  `embedding` `(B, E)`; for one source `one.grid` `(B, S, S, 2)` (the clamped sampling grid,
  x first), `one.warped` (the warped source, which is also the fused output),
  `one.per_sample` `(B,)`, `one.loss` and `one.grad.<key>`; for three sources
  `three.fused`, `three.per_sample`, `three.loss` and `three.grad.<key>`; in train mode also
  `three.running.<key>`, every running statistic after the three-source call.
  The loss is the curriculum loss over the sorted window `[lo, hi)` stored in the metadata.

The parity cases use the `tiny` (S=32) and `small` (S=64) presets at a reduced width
(base width 4, embedding 32): the full-width weights (19.5 MB and 28 MB in f32) are too big
to commit, and the width multiplier leaves the code path identical.
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

ENCODER_WIDTHS = (1, 2, 4, 8, 8, 8, 8, 8)  # multiples of the base width, paper order
DECODER_WIDTHS = (8, 8, 8, 8, 4, 2, 1)
WARMUP_CALLS = 40


def levels(image_size):
    n = int(round(math.log2(image_size)))
    if 2**n != image_size or not 5 <= n <= 8:
        raise ValueError(f"image size {image_size} is not a power of two in 32..=256")
    return n


class Decoder(nn.Module):
    """ReLU, then (upsample x2, conv 3x3, BN, ReLU) blocks, then upsample, conv 3x3, tanh."""

    def __init__(self, cfg, out_channels):
        super().__init__()
        n = levels(cfg["image_size"])
        hidden = [m * cfg["base_width"] for m in DECODER_WIDTHS[len(DECODER_WIDTHS) - (n - 1):]]
        ac = cfg["upsample_align_corners"]
        layers = [nn.ReLU()]
        cin = 2 * cfg["embedding_dim"]
        for w in hidden:
            layers += [Upsample2x(ac), nn.Conv2d(cin, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU()]
            cin = w
        layers += [Upsample2x(ac), nn.Conv2d(cin, out_channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class Upsample2x(nn.Module):
    """Bilinear x2 with an explicit align_corners (the authors' setting is unknown)."""

    def __init__(self, align_corners):
        super().__init__()
        self.align_corners = align_corners

    def forward(self, x):
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(2 * h, 2 * w), mode="bilinear",
                             align_corners=self.align_corners)


def make_encoder(cfg):
    """pix2pix encoder: conv 4x4 s2 p1; BN + LeakyReLU(0.2) between, none after the last."""
    n = levels(cfg["image_size"])
    widths = [m * cfg["base_width"] for m in ENCODER_WIDTHS[:n]]
    widths[-1] = cfg["embedding_dim"]
    layers = [nn.Conv2d(3, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
    for i in range(1, n):
        layers.append(nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1))
        if i < n - 1:
            layers += [nn.BatchNorm2d(widths[i]), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class FabNetTorch(nn.Module):
    """Attributes `encoder`, `decoder` (flow) and `mask` give the official state-dict keys."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder = make_encoder(cfg)
        self.decoder = Decoder(cfg, 2).net
        self.mask = Decoder(cfg, 1).net

    def embed(self, x):
        return self.encoder(x).flatten(1)

    def reconstruct(self, target, sources):
        """Each encoder / decoder call is its own batch: the target once, then each source."""
        t = self.encoder(target)
        grids, warped, masks = [], [], []
        for s in sources:
            z = torch.cat([self.encoder(s), t], 1)
            flow = self.decoder(z)
            masks.append(self.mask(z))
            _, _, h, w = flow.shape
            ys = torch.linspace(-1, 1, h, dtype=flow.dtype)
            xs = torch.linspace(-1, 1, w, dtype=flow.dtype)
            identity = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1)
            grid = (flow.permute(0, 2, 3, 1) + identity[None]).clamp(-1, 1)
            grids.append(grid)
            warped.append(F.grid_sample(s, grid, mode="bilinear", padding_mode="zeros",
                                        align_corners=True))
        if len(sources) == 1:
            fused = warped[0]
        else:
            weights = torch.softmax(torch.stack(masks), 0)
            fused = (weights * torch.stack(warped)).sum(0)
        return fused, grids, warped, masks


def per_sample_l1(fused, target):
    return (fused - target).abs().flatten(1).mean(1)


def curriculum_loss(per_sample, lo, hi):
    b = per_sample.shape[0]
    start, end = math.floor(lo * b), math.floor(hi * b)
    return per_sample.sort().values[start:end].mean()


def init_pytorch04_(model, gamma_init):
    """PyTorch 0.4 defaults: conv weight and bias U(+-1/sqrt(fan_in)); BN gamma U(0,1) or 1."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1.0 / math.sqrt(m.in_channels * m.kernel_size[0] * m.kernel_size[1])
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, nn.BatchNorm2d):
            if gamma_init == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()


def write_safetensors(path, tensors, metadata, dtype=torch.float32):
    """The safetensors format by hand: u64 LE header size, JSON header, raw LE bytes."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    code, np_code = {torch.float32: ("F32", "<f4"), torch.float64: ("F64", "<f8")}[dtype]
    for name in sorted(tensors):
        t = tensors[name].detach().to(dtype).contiguous()
        data = t.numpy().astype(np_code).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def smooth_images(gen, batch, size):
    """Smooth random images in [0, 1]: 3x3 noise upsampled bicubically.

    Smooth on purpose: bilinear sampling has a kink at integer pixel coordinates, where its
    gradient w.r.t. the grid jumps by the image's second difference. Two float32
    implementations differ by about 1e-6 in the grid, so a coordinate within ~1e-5 px of an
    integer can land on different sides; with pixel noise one such pixel moved gradients by
    6e-4 relative, with smooth images the jump is ~20x smaller.
    """
    coarse = torch.rand(batch, 3, 3, 3, generator=gen)
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return img.clamp(0, 1)


def grad_keys(model):
    """A few parameters whose gradients are compared: first conv, BN, decoder and mask convs."""
    enc = [k for k in model.state_dict() if k.startswith("encoder.")]
    dec = sorted({int(k.split(".")[1]) for k in model.state_dict() if k.startswith("decoder.")})
    first, last = dec[0], dec[-1]
    # Conv biases followed by train-mode BN have a zero gradient, so only the last ones count.
    # The mask's last conv is ill-conditioned in float32 (the softmax over sources cancels most
    # of its gradient), which is one reason the goldens are float64.
    return ["encoder.0.weight", "encoder.3.weight", "encoder.3.bias", enc[-1],
            f"decoder.{first + 1}.weight", f"decoder.{last - 4}.weight", f"decoder.{last}.weight",
            f"decoder.{last}.bias", f"mask.{first + 1}.weight", f"mask.{last - 4}.weight",
            f"mask.{last}.weight"]


def state_dict_f32(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def run_case(name, cfg, batch, window, out_dir):
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    model = FabNetTorch(cfg)
    init_pytorch04_(model, cfg["bn_gamma_init"])
    size = cfg["image_size"]
    # Warm-up calls bring the running statistics near the data's, so that eval mode computes
    # a non-degenerate function (with the initial 0 / 1 its outputs are nearly constant).
    model.train()
    with torch.no_grad():
        for _ in range(WARMUP_CALLS):
            model.reconstruct(smooth_images(gen, batch, size), [smooth_images(gen, batch, size)])
    weights = state_dict_f32(model)

    # The goldens are computed in float64 from the float32 weights and inputs, so that they are
    # the exact function of those to about 1e-15: the Rust model in f64 must match them tightly,
    # and in f32 it is measured against the exact values, not against PyTorch's own float32
    # rounding (which alone moved some long gradient sums by ~1e-4 relative).
    target = smooth_images(gen, batch, size).double()
    sources = [smooth_images(gen, batch, size).double() for _ in range(3)]
    out = {"input.target": target}
    for i, s in enumerate(sources):
        out[f"input.source{i}"] = s
    keys = grad_keys(model)
    lo, hi = window
    for ac in (False, True):
        for mode in ("train", "eval"):
            prefix = f"ac{int(ac)}.{mode}."
            variant = dict(cfg, upsample_align_corners=ac)

            def fresh():
                m = FabNetTorch(variant).double()
                m.load_state_dict(weights, strict=False)
                m.train(mode == "train")
                return m

            m = fresh()
            with torch.no_grad():
                out[prefix + "embedding"] = m.embed(target)
            for label, srcs in (("one", sources[:1]), ("three", sources)):
                m = fresh()
                fused, grids, warped, _ = m.reconstruct(target, srcs)
                per_sample = per_sample_l1(fused, target)
                loss = curriculum_loss(per_sample, lo, hi)
                loss.backward()
                params = dict(m.named_parameters())
                if label == "one":
                    out[prefix + "one.grid"] = grids[0]
                    out[prefix + "one.warped"] = warped[0]
                    assert all(p.grad is None for k, p in params.items() if k.startswith("mask."))
                else:
                    out[prefix + "three.fused"] = fused
                    if mode == "train":
                        for k, v in m.state_dict().items():
                            if "running" in k:
                                out[prefix + f"three.running.{k}"] = v
                out[prefix + f"{label}.per_sample"] = per_sample
                out[prefix + f"{label}.loss"] = loss.reshape(())
                for k in keys:
                    if params[k].grad is not None:
                        out[prefix + f"{label}.grad.{k}"] = params[k].grad

    meta = {k: json.dumps(v) for k, v in cfg.items()}
    meta.update(window_lo=json.dumps(lo), window_hi=json.dumps(hi), batch=json.dumps(batch),
                torch=torch.__version__)
    write_safetensors(os.path.join(out_dir, f"{name}_weights.safetensors"), weights, meta)
    write_safetensors(os.path.join(out_dir, f"{name}_goldens.safetensors"), out, meta,
                      torch.float64)
    pth = os.path.join(out_dir, f"{name}_state_dict.pth")
    full = model.state_dict()  # with num_batches_tracked, as torch writes it
    if name.startswith("small"):
        emb = cfg["embedding_dim"]
        probe = nn.Sequential(nn.BatchNorm1d(emb), nn.Linear(emb, 10, bias=False))
        torch.save({"state_dict_model": full, "state_dict": probe.state_dict(), "epoch": 3},
                   pth + ".tmp")
    else:
        torch.save({"state_dict": full, "epoch": 7}, pth + ".tmp")
    os.replace(pth + ".tmp", pth)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n_params} parameters, batch {batch}, window {window}")


def main():
    torch.set_num_threads(2)
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
    os.makedirs(out_dir, exist_ok=True)
    common = dict(base_width=4, embedding_dim=32, bn_gamma_init="uniform",
                  upsample_align_corners=False)
    run_case("tiny_nf4", dict(common, image_size=32, seed=4), 4, (0.25, 0.75), out_dir)
    run_case("small_nf4", dict(common, image_size=64, seed=6), 2, (0.5, 1.0), out_dir)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Convert a FAb-Net release checkpoint (a legacy, pre-zip torch pickle from 2018) to safetensors.

The release `release_bmvc_fabnet.zip` holds `nv2_curriculum.pth` (the model under
`state_dict`) and `*_4views.pth` (the model under `state_dict_model`, a linear probe under
`state_dict`). candle cannot read legacy pickles, so convert once, with Debian's python3-torch:

    /usr/bin/python3 tests/goldens/convert_release.py nv2_curriculum.pth nv2_curriculum.safetensors

Then `FabNet::from_file` (or `fabnet embed --weights`) reads the output. By default the model is
taken from `state_dict_model` if present, else `state_dict`, else the top-level dict;
`--key state_dict` on a `*_4views.pth` extracts the probe instead. A `module.` prefix
(nn.DataParallel) is stripped, the `num_batches_tracked` counters are dropped, tensors are
written as f32 under their official keys, and the top-level keys found are printed.

Unpickling needs no code from the authors' repository: classes it cannot import are replaced by
inert stand-ins, since only the tensors are kept.
"""

import argparse
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_goldens import write_safetensors  # noqa: E402

MODEL_KEYS = ("state_dict_model", "state_dict")


MAX_STAND_INS = 50


class _StandIn:
    """Replaces a class of the authors' code that is not importable here."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state


def _install_stand_in_module(name):
    """Registers `name` (and its parents) as modules whose every attribute is a stand-in class."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full not in sys.modules:
            module = types.ModuleType(full)
            module.__getattr__ = lambda attr, full=full: type(attr, (_StandIn,),
                                                              {"__module__": full})
            sys.modules[full] = module


def load_checkpoint(path):
    # latin1 reads Python 2 byte strings; torch 1.13 ignores a custom pickle_module, so
    # unimportable modules are stood in for through sys.modules, one per retry.
    for _ in range(MAX_STAND_INS):
        try:
            return torch.load(path, map_location="cpu", encoding="latin1")
        except ModuleNotFoundError as e:
            if e.name is None or e.name in sys.modules:
                raise
            print(f"standing in for module {e.name}")
            _install_stand_in_module(e.name)
    raise SystemExit(f"convert_release: {path} needs more than {MAX_STAND_INS} missing modules")


def select_state_dict(ckpt, key):
    if key is not None:
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise SystemExit(f"convert_release: no top-level key `{key}`")
        return key, ckpt[key]
    if isinstance(ckpt, dict):
        for k in MODEL_KEYS:
            if k in ckpt:
                return k, ckpt[k]
        if all(torch.is_tensor(v) for v in ckpt.values()):
            return None, ckpt
    raise SystemExit("convert_release: no state dict found (top-level keys: "
                     f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__})")


def normalise(state):
    tensors = {k: v for k, v in state.items()
               if torch.is_tensor(v) and not k.endswith("num_batches_tracked")}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="release checkpoint (.pth, legacy or zip format)")
    parser.add_argument("output", help="safetensors file to write")
    parser.add_argument("--key", help="top-level entry to convert (default: the model)")
    args = parser.parse_args(argv)

    ckpt = load_checkpoint(args.input)
    if isinstance(ckpt, dict):
        print(f"top-level keys: {', '.join(sorted(map(str, ckpt)))}")
    key, state = select_state_dict(ckpt, args.key)
    tensors = normalise(state)
    if not tensors:
        raise SystemExit(f"convert_release: `{key}` holds no tensors")
    prefixes = {}
    for k, v in tensors.items():
        prefixes.setdefault(k.split(".")[0], []).append(v.numel())
    for p, sizes in sorted(prefixes.items()):
        print(f"{p}: {len(sizes)} tensors, {sum(sizes)} values")
    write_safetensors(args.output, tensors,
                      {"source": os.path.basename(args.input), "key": str(key)})
    print(f"wrote {args.output} ({len(tensors)} tensors from `{key}`)")


if __name__ == "__main__":
    main()

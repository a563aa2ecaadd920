#!/usr/bin/env bash
# One prepared GPU session for kernels/warp.cu, on a machine with nvcc, torch
# and CuPy but no Rust. Writes everything under $OUT (default ./gpu-check):
#   env.txt          nvidia-smi, nvcc and python versions
#   nvcc.txt         `nvcc --ptx` exactly as build.rs runs it, per compute cap
#   check_ptx.json   checks + timings with the PTX that nvcc made (build.rs's artifact)
#   check_nvrtc.json checks with the same source compiled by NVRTC
#   *.log            the check runs' stderr
# Exit status 0 only when the PTX build and both check runs pass.
set -u
cd "$(dirname "$0")"
OUT=${OUT:-$PWD/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
    nvcc --version | tail -2
    python3 -c 'import torch, cupy; print("torch", torch.__version__, "cuda", torch.version.cuda, "cupy", cupy.__version__)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
best_ptx=""
: >"$OUT/nvcc.txt"
for cap in 70 75 80 90; do
    if nvcc --ptx -O3 -std=c++14 --gpu-architecture=compute_$cap -o "$OUT/warp_$cap.ptx" warp.cu \
        >>"$OUT/nvcc.txt" 2>&1; then
        echo "compute_$cap: ok ($(wc -c <"$OUT/warp_$cap.ptx") bytes)" | tee -a "$OUT/nvcc.txt"
        best_ptx="$OUT/warp_$cap.ptx"
    else
        echo "compute_$cap: nvcc failed" | tee -a "$OUT/nvcc.txt"
    fi
done
if [ -z "$best_ptx" ]; then
    echo "nvcc built no PTX"; exit 1
fi
# The highest cap that built is what a user on this GPU would set.
echo "checking with $best_ptx"
python3 check_gpu.py --ptx "$best_ptx" >"$OUT/check_ptx.json" 2>"$OUT/check_ptx.log" || status=1
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("ptx:", r["kernels"], "ok", r["ok"], r["checks_run"], "checks, worst fp32", r["worst_fp32_error"]); [print(t) for t in r.get("timing", [])]' "$OUT/check_ptx.json" || tail -20 "$OUT/check_ptx.json" "$OUT/check_ptx.log"
python3 check_gpu.py --no-timing >"$OUT/check_nvrtc.json" 2>"$OUT/check_nvrtc.log" || status=1
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("nvrtc: ok", r["ok"], r["checks_run"], "checks, worst fp32", r["worst_fp32_error"])' "$OUT/check_nvrtc.json" || tail -20 "$OUT/check_nvrtc.json" "$OUT/check_nvrtc.log"
rm -f "$OUT"/warp_*.ptx
exit $status

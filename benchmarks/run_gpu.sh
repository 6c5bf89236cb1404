#!/usr/bin/env bash
# GPU benchmark, one command, for a lent H100/H200 (run from the repository root; finishes in under 4 minutes):
#     bash benchmarks/run_gpu.sh
# Installs the carried wheels (.whl/: monai, batchgenerators, SimpleITK, blosc2 + ndindex/msgpack/numexpr/py-cpuinfo,
# nibabel) into /tmp/site when they are there, then writes $OUT/gpu.json (sampling s/volume at 5/10/50 steps and peak
# GPU memory for a BraTS-sized case, training it/s per stage with AMP; default preset, random weights).
# Back on the development machine: .venv/bin/python -m benchmarks.write_gpu_table <files_at>/gpu.json
set -euo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/nvidia_smi.txt" 2>&1 || true
timeout 230 python3 -m benchmarks.bench_gpu --out "$OUT/gpu.json" --budget-seconds 170 2>&1 | tee "$OUT/bench_gpu.log"

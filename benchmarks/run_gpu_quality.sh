#!/usr/bin/env bash
# Quality of the `default` (GPU) preset on the demo dataset, one command for a lent H100/H200 (repository root):
#     bash benchmarks/run_gpu_quality.sh [AE_MIN STRUCTURE_MIN LDM_MIN]      (default 1.5 2.5 2 minutes)
# Needs the demo's raw dataset at .gpu_data/raw/Dataset901_Demo (copied from a `make demo` run: the machine cannot
# build it, nilearn's template is not there), and the wheels in .whl/ where MONAI etc. are not installed.
# Plans the dataset with the default preset, trains fold 0 with each stage ended by its wall-clock budget, predicts
# imagesTs with diffusion (the plans' DDIM steps) and with the one-pass decoder, and evaluates both against
# referenceTs. $OUT gets the plans, the two evaluation summaries and the log.
# Back on the development machine: .venv/bin/python -m benchmarks.write_gpu_quality <files_at>
# (A dry run on a CPU: DEVICE=cpu PREDICT_FLAGS="--steps 1" bash benchmarks/run_gpu_quality.sh 0.05 0.05 0.05)
set -euo pipefail
OUT="${OUT:-$PWD/gpu_quality_out}"
DEVICE="${DEVICE:-cuda}"
PREDICT_FLAGS="${PREDICT_FLAGS:-}"
PYTHON="${PYTHON:-python3}"
AE_MIN="${1:-1.5}" STRUCTURE_MIN="${2:-2.5}" LDM_MIN="${3:-2}"
mkdir -p "$OUT"
if ! "$PYTHON" -c "import monai, batchgenerators, SimpleITK, blosc2, nibabel" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export MSGLDM_HOME="${MSGLDM_HOME:-/tmp/msgldm_gpu_quality}"
rm -rf "$MSGLDM_HOME" && mkdir -p "$MSGLDM_HOME/raw"
cp -r .gpu_data/raw/Dataset901_Demo "$MSGLDM_HOME/raw/"
RAW="$MSGLDM_HOME/raw/Dataset901_Demo"
PRED="$MSGLDM_HOME/predictions"
{
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    "$PYTHON" -m msgldm_auto.cli.plan_and_preprocess -d 901 -pl default -np 8 -device "$DEVICE"
    start=$(date +%s)
    for stage_minutes in "ae $AE_MIN" "structure $STRUCTURE_MIN" "ldm $LDM_MIN"; do
        set -- $stage_minutes
        "$PYTHON" -m msgldm_auto.cli.train 901 2d 0 --stage "$1" --max-minutes "$2" -device "$DEVICE" --no-progress \
            --val-cases 1
    done
    echo "training wall seconds: $(( $(date +%s) - start ))"
    for mode in msgldm one_pass; do
        flags=(); [ "$mode" = one_pass ] && flags=(--one-pass)
        "$PYTHON" -m msgldm_auto.cli.predict -i "$RAW/imagesTs" -o "$PRED/$mode" -d 901 -f 0 -device "$DEVICE" $PREDICT_FLAGS "${flags[@]}"
        "$PYTHON" -m msgldm_auto.cli.evaluate -ref "$RAW/referenceTs" -pred "$PRED/$mode" -d 901 \
            --labels "$RAW/labelsTs" -o "$OUT/summary_$mode.json"
    done
    cp "$MSGLDM_HOME/preprocessed/Dataset901_Demo/MSGLDMPlans.json" "$OUT/plans.json"
    "$PYTHON" - "$MSGLDM_HOME/results/Dataset901_Demo/MSGLDMPlans__2d/fold_0" "$OUT/run.json" "$AE_MIN" "$STRUCTURE_MIN" "$LDM_MIN" <<'PY'
import json, sys, torch
fold, out, minutes = sys.argv[1], sys.argv[2], [float(m) for m in sys.argv[3:6]]
stages = ("ae", "structure", "ldm")
iterations = {s: int(torch.load(f"{fold}/{s}/checkpoint_final.pth", map_location="cpu", weights_only=True)["iteration"]) for s in stages}
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
json.dump({"iterations": iterations, "budget_minutes": dict(zip(stages, minutes)), "device": device, "torch": torch.__version__}, open(out, "w"))
print("iterations", iterations)
PY
} 2>&1 | tee "$OUT/gpu_quality.log"

#!/usr/bin/env bash
# The GPU check, in one go: the environment, the CUDA-relevant tests, the GPU throughput benchmark.
#
#   bash benchmarks/gpu_check.sh [extra throughput.py flags, e.g. --trainers tunescout,trl-sft]
#
# Runs from a checkout with the machine's own Python (PYTHON=..., default python3): an image with
# CUDA torch (written against torch 2.11 / transformers 5.17) plus peft, datasets, pyyaml, pytest,
# and trl for the TRL rows; flash-attn and liger-kernel are used when installed. Nothing is
# installed or downloaded. Bounded to about 9 minutes (tests 180 s, benchmark 360 s, each trainer
# 120 s); typically 5-6 on an H100/H200. Logs and JSON land in $OUT (default benchmarks/out/gpu);
# models and run folders in benchmarks/out/gpu-work. Exit status: 0 all passed, 1 something
# failed (see the logs), 2 no CUDA GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks/out/gpu}"
WORK_DIR="benchmarks/out/gpu-work"
mkdir -p "$OUT_DIR" "$WORK_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # tunescout from this checkout, not installed
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0

echo "== environment" | tee "$OUT_DIR/environment.txt"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT_DIR/environment.txt"
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version(), "|", platform.platform())
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print("gpu", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability(),
          f"| memory {total / 2**30:.0f} GiB ({free / 2**30:.0f} free)", "| bf16", torch.cuda.is_bf16_supported())
    from tunescout.train.flops import peak_bf16_tflops_for

    print("peak bf16 TFLOP/s in tunescout's table:", peak_bf16_tflops_for(torch.cuda.get_device_name()))
for pkg in ("transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "pyyaml", "trl",
            "flash-attn", "liger-kernel", "pytest"):
    try:
        print(f"{pkg:<13}", md.version(pkg))
    except md.PackageNotFoundError:
        print(f"{pkg:<13}", "MISSING")
EOF
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU visible: nothing to check" | tee -a "$OUT_DIR/environment.txt"
    exit 2
fi

echo "== CUDA-relevant tests"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 180 "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/train/test_gpu.py tests/train/test_flex.py tests/train/test_flops.py tests/train/test_accel.py \
        tests/data/test_packing_boundaries.py tests/train/test_loss_equivalence.py 2>&1 | tee "$OUT_DIR/tests.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
    echo "pytest is not installed: tests skipped" | tee "$OUT_DIR/tests.log"
    status=1
fi

echo "== GPU throughput: tunescout vs HF Trainer vs TRL SFTTrainer (~1.1B Llama, bf16)"
timeout 360 "$PY" benchmarks/throughput.py --device cuda --worker-timeout 120 \
    --out "$WORK_DIR/throughput-gpu.json" "$@" 2>&1 | tee "$OUT_DIR/throughput.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cp "$WORK_DIR/throughput-gpu.json" "$OUT_DIR/" 2>/dev/null || status=1
mkdir -p "$OUT_DIR/jobs" && cp "$WORK_DIR"/jobs/*.log "$OUT_DIR/jobs/" 2>/dev/null

echo "== done (status $status): logs and results in $OUT_DIR"
exit $status

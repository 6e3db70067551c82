#!/bin/bash
# Device part of bench/rank_stability.py: the embedded profile (and a larger laptop sample) on a GPU.
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, scipy; print('torch', torch.__version__, 'scipy', scipy.__version__)"
timeout 260 python3 bench/rank_stability.py run --profile embedded --kernel-set 3x3_5x5 --device cuda --cells 40 --draws 6 \
  --modes shared fresh pinned --batch-sizes 128 64 --self-check --time-box 200 --out "$OUT/embedded_3x3_5x5_gpu.json" 2>&1 | grep -v '^|'
timeout 200 python3 bench/rank_stability.py run --profile laptop --kernel-set 3x3_5x5 --device cuda --cells 120 --draws 6 \
  --modes shared fresh pinned --batch-sizes 32 64 --time-box 150 --out "$OUT/laptop_3x3_5x5_gpu.json" 2>&1 | grep -v '^|'
ls -la "$OUT"

#!/bin/bash
# Third device batch: the embedded profile with the engine's new classifier init (linear_gain 9).
export PYTHONUNBUFFERED=1
timeout 150 python3 bench/rank_stability.py run --profile embedded --kernel-set 3x3_5x5 --device cuda --cells 40 --draws 6 \
  --modes shared fresh aligned --batch-sizes 128 --time-box 75 --out "$OUT/embedded_3x3_5x5_gain9_gpu.json" 2>&1 | grep -v '^|'

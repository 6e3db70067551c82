#!/bin/bash
# Second device batch: 1x1_3x3 for both profiles, and embedded with another cell sample and batch 256.
export PYTHONUNBUFFERED=1
timeout 100 python3 bench/rank_stability.py run --profile embedded --kernel-set 1x1_3x3 --device cuda --cells 40 --draws 6 \
  --modes shared fresh pinned --time-box 80 --out "$OUT/embedded_1x1_3x3_gpu.json" 2>&1 | grep -v '^|' | grep -v '^draw'
timeout 90 python3 bench/rank_stability.py run --profile laptop --kernel-set 1x1_3x3 --device cuda --cells 120 --draws 6 \
  --modes shared fresh pinned --time-box 70 --out "$OUT/laptop_1x1_3x3_gpu.json" 2>&1 | grep -v '^|' | grep -v '^draw'
timeout 120 python3 bench/rank_stability.py run --profile embedded --kernel-set 3x3_5x5 --device cuda --cells 40 --draws 6 \
  --sampler-seed 1 --seed 200 --modes shared pinned --batch-sizes 128 256 --time-box 100 --out "$OUT/embedded_3x3_5x5_s1_gpu.json" 2>&1 | grep -v '^|' | grep -v '^draw'
ls -la "$OUT"

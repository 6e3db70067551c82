#!/usr/bin/env bash
# Every GPU figure BENCHMARKS.md asks for, in one short device lease (about 15 minutes on an H100/H200; step 6,
# the benchmark's space at full width, takes what BENCH_S gives it).
# Reports go to ${OUT:-bench/results}/gpu-*.md; run from the repository root with the environment installed:
#   bash bench/gpu.sh                 # DATASETS=../shared/datasets by default (real CIFAR-10 for training)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/results}
ZIP=${ZIP:-../shared/datasets/cifar10-jpg.zip}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-device.txt"

# 1. Search: laptop side by side with the reference, paper profile (20 candidates, 3 reference ones, bare convs)
timeout 240 $PY bench/bench_search.py --device cuda --no-equality --candidates 10 --paper-candidates 12 \
    --paper-ref 2 --out "$OUT/gpu-search.md" > /dev/null
# 2. The bf16 fast scoring mode: same top-1 and rank correlation over 200-candidate searches, and its speed
timeout 150 $PY bench/bench_fast_score.py --device cuda --profile embedded --candidates 200 --seeds 3 \
    > "$OUT/gpu-fast-score.md"
# 3. Training: paper profile, engine vs snntorch stepped at fp32, and bf16
timeout 120 $PY bench/bench_train.py --device cuda --paper --bf16 --rounds 3 > "$OUT/gpu-train.md"
# 4. bf16 against fp32 on real CIFAR-10: images/s and test accuracy after 2 epochs (embedded profile)
[ -f "$ZIP" ] && timeout 150 $PY bench/real_cifar10.py "$ZIP" --profile embedded --device cuda \
    --train-per-class 5000 --epochs 2 --kernel-sets 3x3_5x5 --precisions fp32,bf16 > "$OUT/gpu-cifar10.md"
# 5. Candidates in flight: laptop and embedded candidates/s with 1, 4 and 8 in flight, same results
timeout 240 $PY bench/bench_in_flight.py --device cuda --candidates 150 --in-flight 1,4,8 > "$OUT/gpu-in-flight.md"
# 6. Ground truth at full width: SpikeNAS-Bench's space scored at the width of the networks it trained (the
#    benchmark profile), every distinct cell in a seeded order for as long as BENCH_S allows (resumable: run it
#    again to go on), then the score against their 100-epoch accuracies (docs/benchmark.md)
timeout "${BENCH_S:-240}" $PY -m engine explore --dataset sample --kernel-sets spikenas --exhaustive --iterations 14125 \
    --baseline '' --profile benchmark --device cuda --in-flight 4 --out "$OUT/gpu-bench-run" > /dev/null 2>&1
$PY -m engine --db "$OUT/gpu-bench-run/spikernel.db" benchmark report --run 1 > "$OUT/gpu-benchmark.md"
tail -n 5 "$OUT"/gpu-*.md

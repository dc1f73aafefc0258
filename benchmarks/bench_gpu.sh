#!/usr/bin/env bash
# Issue [3] on the GPU host: bench resnet50, bert-base, vgg19 and openpose at fp32 and
# bf16, batch 1..128 (capped by each model's max_batch_size), then one HTML report.
#   PYTHONPATH=src bash benchmarks/bench_gpu.sh OUT_DIR [DURATION_S]
set -euo pipefail
out=${1:?output folder}
duration=${2:-3}
mkdir -p "$out"
common=(--device cuda --precision fp32,bf16 --batch-size 1,2,4,8,16,32,64,128
        --duration-s "$duration" --warmup-s 1
        # one of p5.48xlarge's 8 H100s: 55.04 USD/h / 8 (catalogue, us-east-1 on-demand)
        --price-usd-per-hour 6.88)
for model in resnet50 bert-base vgg19 openpose; do
  extra=()
  [ "$model" = openpose ] && extra=(--profile)
  python3 -c "from inferpack.cli import main; main()" bench --workload "$model" \
    "${common[@]}" "${extra[@]}" --output "$out/bench_$model.json"
done
python3 -c "from inferpack.cli import main; main()" report "$out"/bench_*.json \
  --output "$out/bench_gpu_report.html"

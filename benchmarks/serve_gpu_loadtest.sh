#!/usr/bin/env bash
# DESIGN §4 serving overhead on the GPU host: ResNet-50 fp32 measured in-process by
# `inferpack bench` (batch 1), then served by `inferpack serve` and driven by
# `inferpack loadtest` over REST binary and gRPC at concurrency 1, 4 and 16.
#   PYTHONPATH=src bash benchmarks/serve_gpu_loadtest.sh OUT_DIR
set -euo pipefail
out=${1:?output folder}
mkdir -p "$out"
ip() { python3 -c "from inferpack.cli import main; main()" "$@"; }
ip bench --workload resnet50 --device cuda --precision fp32 --batch-size 1 \
  --duration-s 6 --warmup-s 2 --output "$out/resnet50_inprocess_b1.json"
repo=$(mktemp -d)
ip repo init "$repo" --workloads resnet50
sed -i 's/device: auto/device: cuda:0/' "$repo/resnet50/model.yaml"
ip serve --model-repository "$repo" --http-port 18000 --grpc-port 18001 --log-level warning \
  > "$out/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf http://127.0.0.1:18000/v2/health/ready >/dev/null && break
  sleep 1
done
for url in http://127.0.0.1:18000 grpc://127.0.0.1:18001; do
  name=$([ "${url%%:*}" = grpc ] && echo grpc || echo http-binary)
  ip loadtest --url "$url" --model resnet50 --concurrency 1,4,16 --duration-s 6 \
    --warmup-s 2 --max-windows 6 --output "$out/resnet50_served_$name.json"
done

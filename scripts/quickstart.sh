#!/usr/bin/env bash
# The README's main job: set up .venv if needed, train a policy, and show where its results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
out=${QUICKSTART_DIR:-quickstart}
rm -rf "$out"
mkdir -p "$out"
.venv/bin/robot-sac train --config configs/train/pendulum.yaml --out "$out/run"
echo
echo "learning curve: $out/run/curve.png"
echo "summary:        $out/run/summary.json"
echo "TensorBoard:    .venv/bin/tensorboard --logdir $out/run/tb"

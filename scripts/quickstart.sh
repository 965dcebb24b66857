#!/usr/bin/env bash
# The README's main job, end to end on one machine with no hardware:
#   1. train a claw valve-turning policy in MuJoCo with randomized dynamics,
#   2. export it to policy.onnx,
#   3. start the virtual claw (Dynamixel Protocol 2.0 on a pseudo-terminal),
#   4. drive it with firmware-bridge run through that serial port,
#   5. stress the policy with a short robustness suite,
# then print where every artifact is. Budget knobs: QUICKSTART_STEPS, QUICKSTART_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bin=.venv/bin
out=${QUICKSTART_DIR:-quickstart}
steps=${QUICKSTART_STEPS:-60000}
rm -rf "$out"
mkdir -p "$out"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/5 train: claw valve turn, $steps environment steps"
$bin/robot-sac train --config configs/train/claw_turn_quickstart.yaml --steps "$steps" --out "$out/run"

step "2/5 export: $out/policy.onnx"
$bin/robot-sac export "$out/run" --checkpoint best --out "$out/policy.onnx"

step "3/5 virtual robot: the claw's ten Dynamixels on a pseudo-terminal"
$bin/robot-sac virtual-robot --robot claw --task claw_turn --serial --link "$out/claw.tty" --seed 0 \
    > "$out/virtual_robot.log" 2>&1 &
robot_pid=$!
trap 'kill $robot_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -e "$out/claw.tty" ] && break; sleep 0.1; done
[ -e "$out/claw.tty" ] || { cat "$out/virtual_robot.log"; echo "virtual robot did not start" >&2; exit 1; }
echo "serving on $(readlink "$out/claw.tty")"

step "4/5 deploy: firmware-bridge run over Dynamixel Protocol 2.0, 20 s"
$bin/firmware-bridge run --policy "$out/policy.onnx" --robot claw --task claw_turn --port "$out/claw.tty" \
    --duration 20 --log "$out/bridge.mcap" --json "$out/bridge_summary.json"
$bin/firmware-bridge log-summary "$out/bridge.mcap" --plot "$out/bridge.png" > "$out/log_summary.txt"
kill -TERM $robot_pid 2>/dev/null || true
wait $robot_pid 2>/dev/null || true
trap - EXIT

step "5/5 stress: quick robustness suite"
$bin/robot-sac robustness "$out/policy.onnx" --task claw_turn --suite quick --out "$out/robustness"

step "artifacts"
cat <<EOF
run directory:       $out/run  (curve.png, summary.json, checkpoints/, tb/)
learning curve:      $out/run/curve.png
policy file:         $out/policy.onnx
bridge summary:      $out/bridge_summary.json
bridge tick log:     $out/bridge.mcap  (joint and timing plots: $out/bridge.png; summary: $out/log_summary.txt)
virtual robot log:   $out/virtual_robot.log
robustness report:   $out/robustness/report.md  (summary.json, heatmaps *.png)
TensorBoard:         $bin/tensorboard --logdir $out/run/tb
EOF

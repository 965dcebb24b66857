"""Learner ingest over loopback, and the time from a policy push to its first use on the robot.

Ingest: the learner's network side (``LearnerLink``: receive, decode and check against the claw's layout,
drop duplicates, score every row with the task's reward code, acknowledge) plus the training thread's part
(``ReplayBuffer.add_batch``), fed by 1 and 4 simulated robots, each its own process speaking the wire
protocol (batches of ``--batch`` transitions, ``--window`` unacknowledged at most), as fast as the learner
acknowledges. No gradient updates run: this is the ingest ceiling; with training the link thread shares
the machine with it.

Push to first use: a 256x256 actor exported by ``robot_sac.export`` for each version; the link publishes it
(t0); the robot's ``LearnerUplink`` checks the sha256 and the metadata (``PolicyRuntime`` with the robot
spec, including its warm-up) and swaps it into a 100 Hz tick loop; t1 is the start of the first tick that
runs it. Robot and learner share this process, so both times are on one clock.

    python benchmarks/learner_ingest.py [--transitions 20000] [--pushes 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import zmq

from firmware_bridge.learner_uplink import LearnerUplink, UplinkConfig
from firmware_bridge.learner_wire import (
    MessageType,
    TransitionBatch,
    TransitionLayout,
    decode_ack,
    encode_transitions,
    parse_header,
)
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.policy_runtime import PolicyRuntime
from firmware_bridge.task import TaskInterface
from robot_sac.export import ExportedPolicy, build_contract, robot_interface, to_onnx
from robot_sac.learner_link import LearnerLink
from robot_sac.networks import Actor, ObservationNormalizer
from robot_sac.real_transitions import TransitionScorer
from robot_sac.replay import ReplayBuffer
from sim.task import TaskSpec

TASK = "claw_turn"


def _claw():
    task = TaskInterface.load(TASK)
    spec = task.load_robot()
    builder = ObservationBuilder(spec, task)
    return task, spec, builder, TransitionLayout(builder.dim, spec.num_joints, spec.num_joints)


def _batch_arrays(layout: TransitionLayout, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for name, dtype, width in layout.arrays(2):
        shape = (n, width) if width else (n,)
        arrays[name] = (rng.uniform(-1, 1, shape) if dtype == "float32" else np.zeros(shape)).astype(dtype)
    return arrays


def simulated_robot(endpoint: str, robot_id: str, transitions: int, batch: int, window: int, start, ready, done):
    """A robot process: numbered batches on a DEALER, at most ``window`` unacknowledged."""
    _, _, builder, layout = _claw()
    arrays = _batch_arrays(layout, batch, np.random.default_rng(hash(robot_id) % 2**32))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    ready.put(robot_id)
    start.wait()
    next_seq, received, t0 = 0, -1, time.perf_counter()
    while received < transitions - 1:
        while next_seq < transitions and next_seq - 1 - received < window * batch:
            msg = TransitionBatch(robot_id, "bench0000000000", next_seq, max(received + 1, 0),
                                  builder.interface_hash(), {"valve_angle": 1.0}, ["valve_angle", "valve_velocity"],
                                  arrays)  # fmt: skip
            sock.send_multipart(encode_transitions(msg, layout))
            next_seq += batch
        if sock.poll(5000):
            kind, header = parse_header(sock.recv_multipart())
            if kind is MessageType.ACK:
                received = max(received, decode_ack(header).received)
        else:
            raise RuntimeError(f"{robot_id}: no acknowledgement for 5 s")
    done.put((robot_id, time.perf_counter() - t0))
    sock.close()


def bench_ingest(n_robots: int, transitions: int, batch: int, window: int) -> dict:
    task, spec, builder, layout = _claw()
    link = LearnerLink("tcp://127.0.0.1:*", layout, builder.interface_hash(),
                       TransitionScorer(TaskSpec.load(TASK), spec))  # fmt: skip
    link.start()
    buffer = ReplayBuffer(layout.obs_dim, layout.act_dim, n_robots * transitions + batch)
    total = n_robots * transitions
    stored = [0]

    def drain():  # the training thread's share of ingest: into the replay buffer
        while stored[0] < total:
            try:
                item = link.ingest.get(timeout=0.5)
            except queue.Empty:
                continue
            s = item.scored
            buffer.add_batch(s.obs, s.action, s.reward, s.next_obs, s.terminated)
            stored[0] += len(s)

    ctx = mp.get_context("spawn")
    start, ready, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=simulated_robot, args=(link.endpoint, f"robot-{i}", transitions, batch, window,
                                                       start, ready, done)) for i in range(n_robots)]  # fmt: skip
    for p in procs:
        p.start()
    for _ in procs:  # every robot process has imported and connected before the clock starts
        ready.get(timeout=300)
    drainer = threading.Thread(target=drain)
    drainer.start()
    t0 = time.perf_counter()
    start.set()
    drainer.join()
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    link.stop()
    dups = sum(r.duplicates for r in link.robots.values())
    return {"robots": n_robots, "transitions": stored[0], "wall_s": round(wall, 3),
            "transitions_per_s": round(stored[0] / wall), "duplicates": dups,
            "malformed": link.counts["malformed"]}  # fmt: skip


def bench_push(pushes: int, tmp: Path) -> dict:
    task, spec, builder, layout = _claw()
    torch.manual_seed(0)
    actor = Actor(layout.obs_dim, layout.act_dim, (256, 256)).eval()
    normalizer = ObservationNormalizer(layout.obs_dim, enabled=False)
    interface = robot_interface(spec, task)
    files, export_s = [], []
    for version in range(1, pushes + 2):
        t = time.perf_counter()
        files.append(to_onnx(ExportedPolicy(actor, normalizer), build_contract(interface, "bench", normalizer,
                                                                                version, "bench")))  # fmt: skip
        export_s.append(time.perf_counter() - t)
    link = LearnerLink("tcp://127.0.0.1:*", layout, builder.interface_hash(),
                       TransitionScorer(TaskSpec.load(TASK), spec))  # fmt: skip
    link.start()

    first_policy = PolicyRuntime(files[0], spec, task)
    current = {"policy": (first_policy, 1)}
    first_use: dict[int, float] = {}

    def swap(policy, version):
        current["policy"] = (policy, version)  # one reference store, read at the next tick

    uplink = LearnerUplink(UplinkConfig(link.endpoint, "claw-bench", tmp / "spool", spool_fsync=False, heartbeat_s=0.1),
                           builder, first_policy, swap=swap)  # fmt: skip
    obs = np.zeros(layout.obs_dim, dtype=np.float32)
    stop = threading.Event()

    def tick_loop():  # 100 Hz on absolute deadlines: a swap is seen at the start of the next tick
        start, i = time.perf_counter(), 0
        while not stop.is_set():
            i += 1
            time.sleep(max(0.0, start + i / 100.0 - time.perf_counter()))
            tick_start = time.perf_counter()
            policy, version = current["policy"]
            policy(obs)
            if version not in first_use:
                first_use[version] = tick_start

    ticker = threading.Thread(target=tick_loop)
    ticker.start()
    deadline = time.monotonic() + 10
    while "claw-bench" not in link.robots and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = []
    for version, data in enumerate(files[1:], start=2):
        time.sleep(0.3)
        t0 = time.perf_counter()
        link.publish(version, data)
        while version not in first_use and time.perf_counter() - t0 < 10:
            time.sleep(0.0005)
        latencies.append(first_use[version] - t0)
    stop.set()
    ticker.join()
    uplink.close()
    link.stop()
    ms = np.array(latencies) * 1e3
    return {"pushes": len(latencies), "policy_bytes": len(files[1]),
            "push_to_first_use_ms_p50": round(float(np.median(ms)), 1),
            "push_to_first_use_ms_max": round(float(ms.max()), 1),
            "export_s_median": round(float(np.median(export_s)), 2),
            "accepted": uplink.counters()["policies_accepted"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=20000, help="per robot")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ingest = [bench_ingest(n, args.transitions, args.batch, args.window) for n in (1, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        push = bench_push(args.pushes, Path(tmp))
    if args.json:
        print(json.dumps({"ingest": ingest, "push": push}, indent=2))
        return
    print(f"learner ingest over loopback (claw layout, batches of {args.batch}, window {args.window}, no updates)")
    print(f"{'robots':>6} {'transitions':>12} {'wall s':>8} {'transitions/s':>14} {'duplicates':>10}")
    for r in ingest:
        print(f"{r['robots']:>6} {r['transitions']:>12} {r['wall_s']:>8.2f} {r['transitions_per_s']:>14} "
              f"{r['duplicates']:>10}")
    print(f"\npolicy push -> first use on the robot ({push['pushes']} pushes, {push['policy_bytes']} B actor, "
          f"100 Hz tick loop): p50 {push['push_to_first_use_ms_p50']} ms, max {push['push_to_first_use_ms_max']} ms; "
          f"accepted {push['accepted']}; export (learner side, not included) median {push['export_s_median']} s")


if __name__ == "__main__":
    main()

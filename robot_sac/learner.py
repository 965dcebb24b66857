"""The off-board learner: continue SAC from a simulation run on robots' real transitions, send actors back.

Threads: ``LearnerLink`` (network, scoring, deduplication) and the caller's thread, which trains: drain
what arrived into the real replay buffer, keep ``updates = utd x real transitions``, export the actor every
``push_every`` updates (``robot_sac.export``, checked by the robot's own loader) and hand it to the link,
checkpoint every ``checkpoint_every_s``. The export runs on the training thread: torch's exporter keeps
global tracing state that a concurrent optimizer step corrupts (seen as ``KeyError: 'custom'`` in
``torch.fx.traceback``), so training pauses for the seconds an export takes.

The output directory holds ``config.yaml`` (the sim run's training config and this learner's config),
``checkpoints/last.pt`` (agent with optimizers and temperature, counters, per-robot sequence numbers,
RNG states) with ``checkpoints/real_replay.<generation>.npz`` beside it, TensorBoard events in ``tb/`` and
``summary.json``. A checkpoint names its replay generation and is replaced atomically, so a learner killed
at any moment restarts from a consistent pair: the replay holds exactly the transitions up to the per-robot
numbers in ``last.pt``, and robots still hold everything after them (a robot deletes only what a checkpoint
covers).
"""

from __future__ import annotations

import copy
import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from firmware_bridge.learner_wire import TransitionLayout
from firmware_bridge.observation import ObservationBuilder
from firmware_bridge.typed_yaml import ConfigError, to_mapping
from robot_sac.checkpoint_io import atomic_torch_save, restore_rng_states, rng_states
from robot_sac.config import load_run_config
from robot_sac.envs import make_env
from robot_sac.export import (
    ExportedPolicy,
    ExportError,
    TorchPolicy,
    build_contract,
    robot_interface,
    to_onnx,
    verify,
)
from robot_sac.learner_link import HISTORY_KEPT, LearnerLink, RobotRecord
from robot_sac.real_transitions import TransitionScorer
from robot_sac.replay import Batch, ReplayBuffer
from robot_sac.sac import SAC, configure_torch_threads, select_device
from robot_sac.trainer import saved_replay

LEARNER_CHECKPOINT_VERSION = 1


@dataclass
class LearnerConfig:
    utd: float = 1.0
    """Gradient updates per real transition received."""
    push_every: int = 1000
    """Updates between two actors sent to the robots."""
    checkpoint_every_s: float = 30.0
    """Seconds between checkpoints; robots keep transitions in their spool until one covers them."""
    seed_replay: bool = True
    """Also sample the simulation run's replay buffer; False starts from real transitions only."""
    real_fraction: float = 0.5
    """Share of each minibatch drawn from real transitions while the simulation buffer is sampled too."""
    real_buffer_size: int = 1_000_000
    learning_starts: int = 256
    """Real transitions before the first update."""
    device: str = "auto"
    torch_threads: int = 0
    """Intra-op threads for torch on CPU, per pass when the update runs two threads; 0: torch's default
    (halved per pass on two threads)."""

    def __post_init__(self) -> None:
        if self.utd <= 0:
            raise ConfigError(f"utd: must be positive, got {self.utd}")
        if self.push_every < 1:
            raise ConfigError(f"push_every: must be at least 1, got {self.push_every}")
        if self.checkpoint_every_s <= 0:
            raise ConfigError(f"checkpoint_every_s: must be positive, got {self.checkpoint_every_s}")
        if self.learning_starts < 1:
            raise ConfigError(f"learning_starts: must be at least 1, got {self.learning_starts}")
        if not 0.0 < self.real_fraction <= 1.0:
            raise ConfigError(f"real_fraction: must be in (0, 1], got {self.real_fraction}")


class Learner:
    def __init__(
        self,
        from_dir: str | Path,
        out_dir: str | Path,
        cfg: LearnerConfig,
        bind: str = "tcp://0.0.0.0:5555",
        keys_dir: str | Path | None = None,
    ):
        self.from_dir, self.out_dir, self.cfg = Path(from_dir), Path(out_dir), cfg
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.run_id = self.out_dir.resolve().name
        self.train_cfg = load_run_config(self.from_dir)
        if self.train_cfg.sac.privileged_critic:
            raise ConfigError(
                f"{self.from_dir}: sac.privileged_critic: this run's critics take the simulator's privileged "
                "observation (true state, drawn dynamics), which a robot's transitions do not carry; a learner "
                "continues runs trained without it"
            )
        self.device = select_device(cfg.device)

        env = make_env(self.train_cfg.env, self.train_cfg.env_kwargs)
        base = env.unwrapped
        if getattr(base, "robot_spec", None) is None:
            env.close()
            raise ConfigError(f"{self.from_dir}: env {self.train_cfg.env} is not a robot task; a learner needs one")
        self.robot_spec, self.task = base.robot_spec, base.task
        env.close()
        self.interface = robot_interface(self.robot_spec, self.task)
        obs_dim, act_dim = self.interface["obs_dim"], self.interface["act_dim"]
        self.layout = TransitionLayout(obs_dim, act_dim, self.robot_spec.num_joints)
        self.interface_hash = ObservationBuilder(self.robot_spec, self.task).interface_hash()

        self.agent = SAC(obs_dim, act_dim, self.train_cfg.sac, self.device)
        configure_torch_threads(cfg.torch_threads, self.agent.two_threads)
        self.real = ReplayBuffer(obs_dim, act_dim, cfg.real_buffer_size, self.device)
        self.sim: ReplayBuffer | None = None
        sim_state = None
        if cfg.seed_replay:
            self.sim = ReplayBuffer(obs_dim, act_dim, self.train_cfg.buffer_size, self.device)
            sim_state = _load_sim_checkpoint(self.from_dir / "checkpoints", self.sim, self.device)
        self.rng = np.random.default_rng(self.train_cfg.seed + 7)

        self.transitions = 0
        self.updates = 0
        self.update_s = 0.0
        self.wall_s = 0.0
        self.base_version = 0
        self.next_version = 0
        self.replay_generation = 0
        self.ingested: dict[str, tuple[str, int]] = {}
        """Per robot: (spool id, highest sequence number in the real buffer)."""
        self.counted: dict[str, dict] = {}
        """Per robot: its record's counters as they were when the last batch in the real buffer was taken."""
        robots: dict[str, RobotRecord] = {}
        if (self.ckpt_dir / "last.pt").exists():
            robots = self._resume(self.ckpt_dir / "last.pt")
        else:
            # The checkpoint the simulation replay came from, when it was loaded: the run may have moved on since.
            self._start_from_sim(sim_state or _read_sim_checkpoint(self.from_dir / "checkpoints", self.device))
        self.link = LearnerLink(bind, self.layout, self.interface_hash, TransitionScorer(self.task, self.robot_spec),
                                robots, str(keys_dir) if keys_dir else None)  # fmt: skip
        self.exports: deque[tuple[int, float]] = deque(maxlen=HISTORY_KEPT)
        """(version, seconds the export took) of the newest actors sent."""
        self.export_count = 0
        self.push_failures: deque[tuple[int, str]] = deque(maxlen=HISTORY_KEPT)
        """(update count, why) of the newest pushes whose export failed its checks; nothing was sent."""
        self.push_failure_count = 0
        self.checkpoints = 0
        self._writer = None
        self.last_info: dict[str, float] = {}

    # -- starting points ----------------------------------------------------------------------------

    def _start_from_sim(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        # Versions continue past the simulation run's (exported with its step count as version).
        self.base_version = int(state["counters"]["step"]) + 1
        self.next_version = self.base_version

    def _resume(self, path: Path) -> dict[str, RobotRecord]:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("version") != LEARNER_CHECKPOINT_VERSION or state.get("kind") != "learner":
            raise ValueError(f"{path}: not a learner checkpoint of version {LEARNER_CHECKPOINT_VERSION}")
        self.agent.load_state_dict(state["agent"])
        c = state["counters"]
        self.transitions, self.updates, self.update_s, self.wall_s = (
            c["transitions"], c["updates"], c["update_s"], c["wall_s"]
        )  # fmt: skip
        self.base_version, self.next_version = c["base_version"], c["next_version"]
        self.replay_generation = state["replay_generation"]
        if self.replay_generation:
            self.real.load(self.ckpt_dir / f"real_replay.{self.replay_generation}.npz")
        self.ingested = {robot: (r["spool"], r["received"]) for robot, r in state["robots"].items()}
        records = {robot: RobotRecord.from_checkpoint(r) for robot, r in state["robots"].items()}
        self.counted = {robot: record.counted_state() for robot, record in records.items()}
        restore_rng_states(self.rng, state["rng"])
        return records

    def release_robot(self, robot: str) -> None:
        """Unbind ``robot`` from the CURVE key it first spoke with (kept in the checkpoint), so that the next allowed
        key to speak for it takes it: a robot moved to a new key while its old one stays allowed. Before
        ``start``."""
        checkpoint = self.ckpt_dir / "last.pt"
        if not checkpoint.exists():
            raise ValueError(f"--release-robot {robot}: no learner checkpoint in {self.ckpt_dir} yet, so no id is "
                             "bound")  # fmt: skip
        rec = self.link.robots.get(robot)
        if rec is None:
            known = ", ".join(sorted(self.link.robots)) or "none"
            raise ValueError(f"--release-robot {robot}: no robot of that id in {checkpoint} (known: {known})")
        rec.key = None

    # -- the loop -----------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and start receiving; returns the bound endpoint."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        config = {"train": to_mapping(self.train_cfg), "learner": to_mapping(self.cfg), "from": str(self.from_dir)}
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.link.start()
        return self.link.endpoint

    def run(self, stop: threading.Event, max_updates: int | None = None, on_report=None, report_every_s=10.0):
        """Train until ``stop`` is set (or ``max_updates`` this session); checkpoint at the end."""
        cfg = self.cfg
        start_wall, last_ckpt, last_report = time.perf_counter(), time.perf_counter(), time.perf_counter()
        base_wall, session_updates = self.wall_s, 0
        dirty = False
        while not stop.is_set() and (max_updates is None or session_updates < max_updates):
            if self.link.error is not None:
                raise RuntimeError(f"learner link failed: {self.link.error}") from self.link.error
            dirty |= self._drain()
            owed = int(cfg.utd * self.transitions) - self.updates
            if owed > 0 and len(self.real) >= cfg.learning_starts:
                t0 = time.perf_counter()
                self.last_info = self.agent.update(self._sample())
                self.update_s += time.perf_counter() - t0
                self.updates += 1
                session_updates += 1
                dirty = True
                if self.updates % cfg.push_every == 0:
                    self._push_or_count()
            else:
                dirty |= self._wait_for_data()
            now = time.perf_counter()
            self.wall_s = base_wall + now - start_wall
            if dirty and now - last_ckpt >= cfg.checkpoint_every_s:
                self.save_checkpoint()
                self._log_scalars()
                last_ckpt, dirty = now, False
            if on_report is not None and now - last_report >= report_every_s:
                on_report(self.report())
                last_report = now
        self._drain()
        self.save_checkpoint()
        return self.report()

    def close(self) -> None:
        self.link.stop()
        if self._writer is not None:
            self._writer.close()
        self.write_summary()

    def _wait_for_data(self) -> bool:
        """Whether a batch came (and was stored): before ``learning_starts`` this is how every batch comes, and
        each one must reach a checkpoint, or the robots are never told they may forget it."""
        try:
            item = self.link.ingest.get(timeout=0.05)
        except queue.Empty:
            return False
        self._add(item)
        return True

    def _drain(self) -> bool:
        added = False
        while True:
            try:
                item = self.link.ingest.get_nowait()
            except queue.Empty:
                return added
            self._add(item)
            added = True

    def _add(self, item) -> None:
        scored = item.scored
        if len(scored):
            self.real.add_batch(scored.obs, scored.action, scored.reward, scored.next_obs, scored.terminated)
            if self.train_cfg.sac.normalize_observations:
                self.agent.normalizer.update(scored.next_obs)
        self.transitions += len(scored)
        self.ingested[item.robot] = (item.spool, item.last_seq)
        self.counted[item.robot] = item.counted

    def _sample(self) -> Batch:
        n = self.train_cfg.sac.batch_size
        if self.sim is None or len(self.sim) == 0:
            return self.real.sample(self.rng, n)
        n_real = max(1, round(n * self.cfg.real_fraction))
        real, sim = self.real.sample(self.rng, n_real), self.sim.sample(self.rng, n - n_real)
        return Batch(*(torch.cat([getattr(real, f), getattr(sim, f)]) for f in ("obs", "action", "reward",
                                                                                 "next_obs", "terminated")))

    def _push_or_count(self) -> None:
        """A failed export (the robot's own loader refuses the file, or it acts unlike the actor, or the export
        itself raises) is counted and reported, and the robots keep the policy they run: ingest and training go
        on, whatever went wrong in making one file."""
        try:
            self.push()
        except Exception as exc:  # noqa: BLE001 - reported in push_failures, never a reason to stop learning
            reason = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
            self.push_failures.append((self.updates, reason))
            self.push_failure_count += 1

    def push(self) -> int:
        """Export the actor as it is now and send it to every robot; returns its version."""
        seen = [rec.running_version for rec in list(self.link.robots.values())]
        # Never below a version a robot already runs (e.g. sent before a crash and a restart).
        version = max(self.next_version, self.base_version + self.updates, max(seen, default=-1) + 1)
        self.next_version = version + 1
        t0 = time.perf_counter()
        actor = copy.deepcopy(self.agent.policy_actor).cpu().eval()
        normalizer = copy.deepcopy(self.agent.normalizer).cpu().eval()
        contract = build_contract(self.interface, self.train_cfg.env, normalizer, version, self.run_id)
        data = to_onnx(ExportedPolicy(actor, normalizer), contract)
        # The file goes out only if the robot's own loader accepts it and it acts like the actor on the
        # latest real observations.
        recent = (self.real.pos - 1 - np.arange(min(64, len(self.real)))) % self.real.capacity
        verify(data, TorchPolicy(actor, normalizer), {"real": self.real.obs[recent]}, self.robot_spec, self.task)
        self.exports.append((version, time.perf_counter() - t0))
        self.export_count += 1
        self.link.publish(version, data)
        return version

    # -- checkpoints and reports --------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Replay generation first, then ``last.pt`` naming it; then robots may forget what it covers."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        generation = self.replay_generation + 1
        self.real.save(self.ckpt_dir / f"real_replay.{generation}.npz")
        robots = {}
        for robot, (spool, through) in self.ingested.items():
            rec = self.link.robots.get(robot, RobotRecord(robot, spool=spool))
            robots[robot] = {**rec.checkpoint_state(through), **self.counted.get(robot, {}), "spool": spool}
        state: dict[str, Any] = {
            "version": LEARNER_CHECKPOINT_VERSION,
            "kind": "learner",
            "config": to_mapping(self.train_cfg),
            "learner_config": to_mapping(self.cfg),
            "agent": self.agent.state_dict(),
            "counters": {"transitions": self.transitions, "updates": self.updates, "update_s": self.update_s,
                         "wall_s": self.wall_s, "base_version": self.base_version,
                         "next_version": self.next_version},  # fmt: skip
            "robots": robots,
            "replay_generation": generation,
            "rng": rng_states(self.rng),
        }
        path = self.ckpt_dir / "last.pt"
        atomic_torch_save(state, path)
        old = self.ckpt_dir / f"real_replay.{self.replay_generation}.npz"
        old.unlink(missing_ok=True)
        self.replay_generation = generation
        self.checkpoints += 1
        self.link.set_durable(dict(self.ingested))
        return path

    def _log_scalars(self) -> None:
        """TensorBoard, by update count: the losses, the ingest, and each robot's real-world returns."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops what a killed learner wrote after its last checkpoint.
            self._writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.updates or None)
        w, step = self._writer, self.updates
        for key, value in self.last_info.items():
            w.add_scalar(key, value, step)
        w.add_scalar("charts/real_transitions", self.transitions, step)
        if self.update_s > 0:
            w.add_scalar("charts/updates_per_s", self.updates / self.update_s, step)
        for robot, rec in list(self.link.robots.items()):
            w.add_scalar(f"charts/transitions/{robot}", rec.transitions, step)
            if rec.episode_returns:
                w.add_scalar(f"rewards/episode_return/{robot}", float(np.mean(rec.episode_returns[-10:])), step)

    def report(self) -> dict[str, Any]:
        return {
            "transitions": self.transitions,
            "updates": self.updates,
            "updates_per_s": round(self.updates / self.update_s, 2) if self.update_s > 0 else None,
            "wall_s": round(self.wall_s, 3),
            "real_buffer": len(self.real),
            "sim_buffer": len(self.sim) if self.sim is not None else 0,
            "alpha": self.agent.alpha,
            "checkpoints": self.checkpoints,
            "policy_exports": [[v, round(s, 3)] for v, s in self.exports],
            "policy_export_count": self.export_count,
            "push_failures": [[updates, why] for updates, why in list(self.push_failures)[-10:]],
            "push_failure_count": self.push_failure_count,
            "device": str(self.device),
            "link": dict(self.link.counts),
            "link_errors": list(self.link.errors),
            "unscorable_reason": self.link.scorer.last_error,
            "off_period_reason": self.link.scorer.last_off_period,
            "robots": {robot: rec.report() for robot, rec in list(self.link.robots.items())},
        }

    def write_summary(self) -> dict[str, Any]:
        summary = self.report()
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


SIM_CHECKPOINT_TRIES = 3


def _read_sim_checkpoint(ckpt_dir: Path, device: torch.device) -> dict:
    # Our own file on local disk (trainer.py), never bytes from the network.
    return torch.load(ckpt_dir / "last.pt", map_location=device, weights_only=False)


def _load_sim_checkpoint(ckpt_dir: Path, replay: ReplayBuffer, device: torch.device) -> dict:
    """The simulation run's ``last.pt``, with the replay written with it loaded into ``replay``. A run still
    training writes a newer pair and removes the older replay, possibly between the two reads: then the newer
    ``last.pt`` is read again."""
    for attempt in range(1, SIM_CHECKPOINT_TRIES + 1):
        state = _read_sim_checkpoint(ckpt_dir, device)
        path = saved_replay(ckpt_dir, state)
        try:
            replay.load(path)
            return state
        except FileNotFoundError as exc:
            if attempt == SIM_CHECKPOINT_TRIES:
                raise FileNotFoundError(
                    f"{path}: the replay file named by {ckpt_dir / 'last.pt'} is missing (read {attempt} times; a "
                    "run still training replaces both at each checkpoint); --empty-replay starts without it"
                ) from exc

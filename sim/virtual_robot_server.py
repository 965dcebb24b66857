"""Serve a ``VirtualRobot`` on a pseudo-terminal (framed protocol or Dynamixel 2.0) or a bound ZMQ socket.

A pseudo-terminal moves bytes instantly, so the server models the serial
line itself: each direction is busy for 10 bit times per byte at the robot
spec's baud rate, and a reply leaves only once the request has fully
"arrived" and the previous reply has gone. Round trips measured against it
are then what the real line would allow, not what a pty does.

Endpoints answer from their latest sensor sample; the physics, a command's
effect and the next sample run after a reply has gone (``finish``), or
while the host is quiet: in real-time mode every physics step, so the state
a reply carries is never older than that. A request that gets no reply (a
Dynamixel SYNC_WRITE) leaves its work for then too, so the read the host
sends right after it is answered first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import select
import threading
import time
import tty
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import zmq

from firmware_bridge.serial_framing import BodyDecoder, FrameDecoder, frame_body
from firmware_bridge.spec import RobotSpec
from sim.backend import Backend
from sim.randomization import nominal, sample
from sim.task import TaskSpec
from sim.virtual_robot import VirtualRobot
from sim.virtual_robot_board import BoardDevice
from sim.virtual_robot_dynamixel import DynamixelChain

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


class FramedEndpoint:
    """The motor board behind COBS frames: ``feed(bytes) -> [(delay_s, frame), ...]``."""

    def __init__(self, board: BoardDevice) -> None:
        self.board = board
        self.decoder = FrameDecoder()
        self._seq = 0

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        out = []
        for seq, msg in self.decoder.feed(data):
            self._seq = (self._seq + 1) & 0xFFFF
            out.append((0.0, frame_body(self.board.handle(seq, msg, self._seq))))
        return out

    def finish(self) -> None:
        self.board.finish()

    def counters(self) -> dict[str, int]:
        return self.decoder.counters.as_dict()


class DynamixelEndpoint:
    def __init__(self, chain: DynamixelChain) -> None:
        self.chain = chain

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        return self.chain.feed(data)

    def finish(self) -> None:
        self.chain.finish()

    def counters(self) -> dict[str, int]:
        c = self.chain.parser.counters
        return {**dataclasses.asdict(c), "bad_frames": c.bad_frames}


class LineModel:
    """When bytes written to a pty would have left a real UART at ``baud``."""

    def __init__(self, baud: int) -> None:
        self.byte_time = BITS_PER_BYTE / baud
        self._rx_done = 0.0
        self._tx_done = 0.0

    def received(self, arrival: float, n: int) -> float:
        """Time the last of ``n`` bytes that began arriving at ``arrival`` is in."""
        self._rx_done = max(self._rx_done, arrival) + n * self.byte_time
        return self._rx_done

    def send_done(self, ready: float, n: int) -> float:
        self._tx_done = max(self._tx_done, ready) + n * self.byte_time
        return self._tx_done


def _sample_period(robot: VirtualRobot) -> float | None:
    """How often a quiet device samples its sensors: every physics step in real time; in lockstep the
    physics moves only on commands, which sample anyway."""
    return None if robot.lockstep else robot.backend.physics_dt


def _sleep_until(t: float) -> None:
    remaining = t - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


class PtyServer:
    """A pseudo-terminal the host opens as its serial port; ``path`` (and ``link``, a symlink to it)."""

    def __init__(self, endpoint, robot: VirtualRobot, baud: int, link: str | None = None) -> None:
        self.endpoint = endpoint
        self.robot = robot
        self.line = LineModel(baud)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes pass through untouched
        self.path = os.ttyname(self._slave)
        self.link = Path(link) if link else None
        if self.link:
            if self.link.is_symlink():
                self.link.unlink()
            self.link.symlink_to(self.path)
        self.address = str(self.link or self.path)

    def serve(self, stop: threading.Event) -> None:
        period = _sample_period(self.robot)
        next_sample = time.monotonic()
        while not stop.is_set():
            wake = self.robot.next_deadline() if period is None else min(self.robot.next_deadline(), next_sample)
            ready, _, _ = select.select([self._master], [], [], min(0.05, max(0.0, wake - time.monotonic())))
            if not ready:
                # Lockstep: the watchdog only; a sample would draw sensor noise at the whims of the clock.
                if period is None:
                    self.robot.poll()
                else:
                    self.endpoint.finish()
                next_sample = time.monotonic() + (period or 0.0)
                continue
            arrival = time.monotonic()
            data = os.read(self._master, 4096)
            in_done = self.line.received(arrival, len(data))
            replies = self.endpoint.feed(data)
            if replies:
                done = in_done
                for delay, packet in replies:
                    done = self.line.send_done(done + delay, len(packet))
                # One write when the last reply would be through: a request answered by several devices
                # (SYNC_READ) costs one wake-up instead of one per device.
                _sleep_until(done)
                os.write(self._master, b"".join(packet for _, packet in replies))
                self.endpoint.finish()
                next_sample = time.monotonic() + (period or 0.0)

    def close(self) -> None:
        if self.link and self.link.is_symlink():
            self.link.unlink()
        os.close(self._master)
        os.close(self._slave)


class ZmqServer:
    """A bound ROUTER: each request body gets one reply body, addressed back to its sender."""

    def __init__(self, board: BoardDevice, robot: VirtualRobot, address: str, context: zmq.Context | None = None):
        self.board = board
        self.robot = robot
        self.decoder = BodyDecoder()
        self.socket = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = 0

    def serve(self, stop: threading.Event) -> None:
        period = _sample_period(self.robot)
        next_sample = time.monotonic()
        while not stop.is_set():
            wake = self.robot.next_deadline() if period is None else min(self.robot.next_deadline(), next_sample)
            # zmq's poll takes whole milliseconds: round up, or a sub-millisecond wait becomes a busy loop.
            timeout_ms = math.ceil(1000 * min(0.05, max(0.0, wake - time.monotonic())))
            if not self.socket.poll(timeout_ms, zmq.POLLIN):
                if period is None:
                    self.robot.poll()
                else:
                    self.board.finish()
                next_sample = time.monotonic() + (period or 0.0)
                continue
            frames = self.socket.recv_multipart()
            decoded = self.decoder.decode(frames[-1])
            if decoded is None:
                continue
            self._seq = (self._seq + 1) & 0xFFFF
            self.socket.send_multipart([*frames[:-1], self.board.handle(*decoded, self._seq)])
            self.board.finish()
            next_sample = time.monotonic() + (period or 0.0)

    def counters(self) -> dict[str, int]:
        return self.decoder.counters.as_dict()

    def close(self) -> None:
        self.socket.close()


def build_robot(
    spec: RobotSpec,
    backend: Backend,
    *,
    task: TaskSpec | None = None,
    seed: int = 0,
    watchdog_s: float | None = None,
    sensor_drops: Iterable[tuple[float, str]] = (),
    lockstep: bool = False,
) -> VirtualRobot:
    """A virtual robot with the task's randomized dynamics and sensor noise (seeded) or, without a task, the
    nominal model.

    ``watchdog_s`` None: 100 ms like moteus, or three control periods for slower robots (the claw's
    10 Hz loop would otherwise trip a 100 ms watchdog between two healthy commands).
    """
    if watchdog_s is None:
        watchdog_s = max(0.1, 3 * spec.control_period)
    n_bodies, n_joints = len(backend.body_names), spec.num_joints
    rng = np.random.default_rng(seed)
    params = nominal(n_bodies, n_joints) if task is None else sample(task.randomization, n_bodies, n_joints, rng)
    return VirtualRobot(
        spec, backend, params, rng=rng, watchdog_s=watchdog_s, sensor_drops=sensor_drops, lockstep=lockstep
    )


def make_server(robot: VirtualRobot, *, serial: bool, zmq_address: str | None = None, link: str | None = None):
    """The pty server speaking the robot's bus protocol, or the ZMQ server speaking the board messages."""
    spec = robot.spec
    if serial:
        if spec.bus.kind == "dynamixel":
            endpoint = DynamixelEndpoint(DynamixelChain(robot))
        else:
            endpoint = FramedEndpoint(BoardDevice(robot))
        return PtyServer(endpoint, robot, spec.bus.baud, link)
    if spec.bus.kind == "dynamixel":
        raise ValueError(
            f"robot {spec.name}: its Dynamixel bus has no ZMQ form (the valve encoder has no field in the "
            "motor-board messages); serve it with --serial"
        )
    return ZmqServer(BoardDevice(robot), robot, zmq_address or "tcp://127.0.0.1:*")


def server_counters(server) -> dict[str, int]:
    endpoint_counters = server.endpoint.counters() if isinstance(server, PtyServer) else server.counters()
    return {**endpoint_counters, **{f"device_{k}": v for k, v in dataclasses.asdict(server.robot.counters).items()}}


@contextlib.contextmanager
def serving(server: PtyServer | ZmqServer) -> Iterator[PtyServer | ZmqServer]:
    """Run ``server`` on a background thread for the ``with`` block (tests, benchmarks, in-process demos)."""
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), name="virtual-robot", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        server.close()

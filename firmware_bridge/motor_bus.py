"""``MotorBus``: a robot's motors behind one transport, one batched exchange per control tick.

Every bus speaks joint space in the robot spec's order and SI units, with the
calibration applied; which wire protocol runs underneath is the bus's
business. Transports are opened by the caller and passed in (see
``bus_factory``), so tests hand a bus a pseudo-terminal or a loopback socket.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from firmware_bridge.calibration import Calibration
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState


class BusError(RuntimeError):
    """The motors answered, but not as the robot spec says they should (count, ids, an error byte)."""


class BusTimeout(BusError, TimeoutError):
    """No answer within the timeout: the state is stale and the loop must act (go safe, retry)."""


class ReplyLate(BusTimeout):
    """The reply to the last command had not come when the caller stopped waiting for it (``collect_reply``'s
    ``wait_s``), before the bus's own timeout. ``state``: the newest state that did come meanwhile (a late
    reply to an earlier command), or None. The reply, if it still comes, is dropped as stale when the next
    one is collected."""

    def __init__(self, message: str, state: RobotState | None = None) -> None:
        super().__init__(message)
        self.state = state


class MotorFault(BusError):
    """A motor answered and reports a hardware fault of its own (overload, overheating, ...): the motor
    needs attention, not the bus. ``motor_id`` names it."""

    def __init__(self, motor_id: int, message: str) -> None:
        super().__init__(message)
        self.motor_id = motor_id


@dataclasses.dataclass(frozen=True)
class MotorInfo:
    """One device found on the bus."""

    motor_id: int
    model: int
    firmware: str


class MotorBus(abc.ABC):
    """The interface the control loop and ``firmware-bridge check`` use.

    Joint arrays are (n,) float64 in ``spec.joints`` order; positions [rad], velocities [rad/s],
    currents [A]. Each call is one request and one reply on the wire; a missing reply raises
    ``BusTimeout``, a reply that contradicts the spec raises ``BusError``.
    """

    def __init__(self, spec: RobotSpec, calibration: Calibration | None = None) -> None:
        self.spec = spec
        self.calibration = calibration or Calibration.identity(spec)
        self._offset, self._direction = self.calibration.arrays(spec)
        self._reply: RobotState | None = None

    @abc.abstractmethod
    def exchange(self, targets: np.ndarray) -> RobotState:
        """Send joint position targets (n,) [rad] with the spec's gains; return the state measured in reply."""

    def send_command(self, targets: np.ndarray) -> None:
        """The first half of ``exchange``: send the targets; ``collect_reply`` returns the state sent back.

        A loop that observes the reply to its previous command sends at the end of one tick and collects at
        the start of the next, so the bus round trip overlaps the wait for the deadline instead of adding to
        the tick's work. This default, for buses that only implement ``exchange``, does the whole exchange
        here, so its errors surface at once.
        """
        self._reply = self.exchange(targets)

    def collect_reply(self, wait_s: float | None = None) -> RobotState:
        """The state sent back for the last ``send_command``.

        ``wait_s``: wait at most this long for it (never past the bus timeout), then raise ``ReplyLate``;
        None waits for the bus timeout. Here the reply is already in hand, so there is nothing to wait for.
        """
        if self._reply is None:
            raise RuntimeError("collect_reply without a command sent")
        reply, self._reply = self._reply, None
        return reply

    @abc.abstractmethod
    def read_state(self) -> RobotState:
        """Read the state without commanding anything: never moves a motor."""

    @abc.abstractmethod
    def arm(self) -> RobotState:
        """Enable the motors (clearing a latched watchdog); they hold where they are until commanded."""

    @abc.abstractmethod
    def damp(self) -> RobotState:
        """Damping only (no stiffness) at the spec's ``safe_state.kd``: the first step of the safe stop."""

    @abc.abstractmethod
    def torque_off(self) -> RobotState:
        """No torque at all: the second step of the safe stop, and the state the motors are left in."""

    def safe_stop(self) -> RobotState:
        """Damp for the spec's ``safe_state.damping_s``, then switch the torque off."""
        self.damp()
        time.sleep(self.spec.safe_state.damping_s)
        return self.torque_off()

    @abc.abstractmethod
    def scan(self) -> list[MotorInfo]:
        """Every device that answers on the bus, including ones the spec does not name."""

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """Bad frames, stale replies and timeouts seen so far, by name."""

    @contextlib.contextmanager
    def armed(self) -> Iterator[RobotState]:
        """``with bus.armed() as state:`` arms, and goes to the safe state however the block ends."""
        try:
            yield self.arm()
        finally:
            self.safe_stop()

    def set_calibration(self, calibration: Calibration) -> None:
        self._offset, self._direction = calibration.arrays(self.spec)
        self.calibration = calibration

    def _joint_from_motor(self, position: np.ndarray, velocity: np.ndarray, current: np.ndarray):
        return (self._direction * (position - self._offset), self._direction * velocity, self._direction * current)

    def _motor_from_joint(self, position: np.ndarray) -> np.ndarray:
        return self._direction * position + self._offset

"""CURVE keys for the robot <-> learner link: where they live and how a socket is set up with them.

A keys directory (``robot-sac keys DIR``) holds::

    server.key, server.key_secret        the learner's key pair
    clients/<name>.key(_secret)          one key pair per robot (copy the pair and server.key to the robot)
    allowed/<name>.key                   the allow-list: public keys the learner accepts

A client whose public key is not in ``allowed/`` fails the handshake: libzmq drops it silently, so it can
neither send nor receive anything. Removing a file from ``allowed/`` revokes that robot at the next start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from firmware_bridge.typed_yaml import ConfigError

SERVER = "server"


class KeysError(ConfigError):
    """A keys directory without the file a socket needs (named)."""


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    allowed: Path
    """Directory of the public keys of the clients the server accepts."""


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def create_keys(directory: str | os.PathLike, clients: list[str]) -> dict[str, Path]:
    """Make the server pair, one pair per client name, and the allow-list of those clients.

    An existing server pair is kept (robots already hold its public key); existing client pairs too.
    """
    directory = Path(directory)
    (directory / "clients").mkdir(parents=True, exist_ok=True)
    (directory / "allowed").mkdir(exist_ok=True)
    if not (directory / f"{SERVER}.key_secret").exists():
        zmq.auth.create_certificates(directory, SERVER)
    made = {SERVER: directory / f"{SERVER}.key_secret"}
    for name in clients:
        secret = directory / "clients" / f"{name}.key_secret"
        if not secret.exists():
            zmq.auth.create_certificates(directory / "clients", name)
        shutil.copyfile(directory / "clients" / f"{name}.key", directory / "allowed" / f"{name}.key")
        made[name] = secret
    return made


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise KeysError(f"{path}: missing (make keys with `robot-sac keys DIR`)")
    public, secret_key = zmq.auth.load_certificate(path)
    if secret and secret_key is None:
        raise KeysError(f"{path}: holds no secret key")
    return public, secret_key


def server_keys(directory: str | os.PathLike) -> ServerKeys:
    """Read (and check) what the learner needs, before any socket exists: errors name the missing file."""
    directory = Path(directory)
    public, secret = _load(directory / f"{SERVER}.key_secret", secret=True)
    allowed = directory / "allowed"
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise KeysError(f"{allowed}: no allowed client keys (make them with `robot-sac keys DIR --client NAME`)")
    return ServerKeys(public, secret, allowed)


def client_keys(directory: str | os.PathLike, name: str = "client") -> ClientKeys:
    """Read (and check) what a robot needs: its key pair and the learner's public key."""
    directory = Path(directory)
    server_public, _ = _load(directory / f"{SERVER}.key", secret=False)
    public, secret = _load(directory / "clients" / f"{name}.key_secret", secret=True)
    return ClientKeys(public, secret, server_public)


def allowed_user_ids(keys: ServerKeys) -> frozenset[str]:
    """The allow-list as the ``User-Id`` of the messages its clients send (Z85 public keys)."""
    return frozenset(key.decode("ascii") for key in zmq.auth.load_certificates(keys.allowed))


def configure_server(socket: zmq.Socket, keys: ServerKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def configure_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


def start_authenticator(context: zmq.Context, keys: ServerKeys) -> ThreadAuthenticator:
    """Accept CURVE clients whose public key is in the allow-list; the caller stops it at shutdown."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.allowed))
    return auth

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
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER = "server"


class KeysError(FileNotFoundError):
    """A keys directory without the file a socket needs (named)."""


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


def configure_server(socket: zmq.Socket, directory: str | os.PathLike) -> None:
    public, secret = _load(Path(directory) / f"{SERVER}.key_secret", secret=True)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def configure_client(socket: zmq.Socket, directory: str | os.PathLike, name: str = "client") -> None:
    directory = Path(directory)
    server_public, _ = _load(directory / f"{SERVER}.key", secret=False)
    public, secret = _load(directory / "clients" / f"{name}.key_secret", secret=True)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def start_authenticator(context: zmq.Context, directory: str | os.PathLike) -> ThreadAuthenticator:
    """Accept CURVE clients whose public key is in ``DIR/allowed``; the caller stops it at shutdown."""
    allowed = Path(directory) / "allowed"
    if not allowed.is_dir() or not any(allowed.glob("*.key")):
        raise KeysError(f"{allowed}: no allowed client keys")
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(allowed))
    return auth

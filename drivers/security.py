"""Optional CurveZMQ authentication and encryption (pyzmq ``zmq.auth``).

Layout written by :func:`generate_keys` (and ``synthloop keys generate DIR``)::

    DIR/public/<name>.key            public certificates (safe to copy around)
    DIR/private/<name>.key_secret    secret certificates (keep on the owning host only)
    DIR/allowed/<name>.key           drivers the controller accepts (a copy of each driver's public key)

The controller's :class:`CurveConfig` names its own secret certificate and the ``allowed``
folder; a driver's names its own secret certificate and the controller's public key. A peer
whose public key is not in ``allowed`` is refused by the ZAP handler: its connection never
carries a single message.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class CurveError(ValueError):
    """Keys missing or unreadable (names the file)."""


@dataclass(frozen=True)
class CurveConfig:
    """Key material for one side. Controller: ``allowed_dir`` set, ``server_public_key`` None.
    Driver: ``server_public_key`` set."""

    public_key: bytes
    secret_key: bytes
    server_public_key: bytes | None = None
    allowed_dir: Path | None = None

    @classmethod
    def server(cls, keys_dir: str | Path, name: str = "controller") -> CurveConfig:
        """The controller's config from a key folder written by :func:`generate_keys`."""
        keys = Path(keys_dir)
        public, secret = _load_secret(keys / "private" / f"{name}.key_secret")
        allowed = keys / "allowed"
        if not allowed.is_dir():
            raise CurveError(f"no allowed-keys folder {allowed} (run `synthloop keys generate`)")
        return cls(public_key=public, secret_key=secret, allowed_dir=allowed)

    @classmethod
    def client(
        cls, keys_dir: str | Path, name: str = "driver", server: str = "controller"
    ) -> CurveConfig:
        """A driver's config: its own secret key and the controller's public key."""
        keys = Path(keys_dir)
        public, secret = _load_secret(keys / "private" / f"{name}.key_secret")
        server_file = keys / "public" / f"{server}.key"
        try:
            server_public, _ = zmq.auth.load_certificate(str(server_file))
        except (OSError, ValueError) as exc:
            raise CurveError(f"cannot read controller public key {server_file}: {exc}") from exc
        return cls(public_key=public, secret_key=secret, server_public_key=server_public)

    @classmethod
    def for_controller(cls, keys_dir: str | Path, name: str = "controller") -> CurveConfig:
        """Alias of :meth:`server` (the name the controller's lab code uses)."""
        return cls.server(keys_dir, name)

    @classmethod
    def for_driver(
        cls, keys_dir: str | Path, name: str = "driver", server: str = "controller"
    ) -> CurveConfig:
        """Alias of :meth:`client`."""
        return cls.client(keys_dir, name, server)

    def apply_server(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def apply_client(self, sock: zmq.Socket) -> None:  # type: ignore[type-arg]
        if self.server_public_key is None:
            raise CurveError("a driver's CurveConfig needs server_public_key")
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_serverkey = self.server_public_key


def _load_secret(path: Path) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read secret key {path}: {exc}") from exc
    if secret is None:
        raise CurveError(f"{path} holds no secret key")
    return public, secret


def generate_keys(
    keys_dir: str | Path, names: list[str] | None = None, *, allow: list[str] | None = None
) -> list[Path]:
    """Create key pairs for ``names`` (default: controller, driver) in ``keys_dir``.

    Every name except "controller" is copied into ``allowed/`` unless ``allow`` lists the names
    to allow explicitly. Existing keys are never overwritten (raises :class:`CurveError`).
    Returns the files written.
    """
    if not zmq.has("curve"):
        raise CurveError("this libzmq was built without CURVE support")
    keys = Path(keys_dir)
    names = names or ["controller", "driver"]
    allow = [n for n in names if n != "controller"] if allow is None else allow
    public, private, allowed = keys / "public", keys / "private", keys / "allowed"
    for folder in (public, private, allowed):
        folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise CurveError(f"invalid key name {name!r}")
        if (private / f"{name}.key_secret").exists():
            raise CurveError(f"key {private / (name + '.key_secret')} exists; not overwriting")
        pub_file, sec_file = zmq.auth.create_certificates(str(keys), name)
        pub_dst, sec_dst = public / f"{name}.key", private / f"{name}.key_secret"
        shutil.move(pub_file, pub_dst)
        shutil.move(sec_file, sec_dst)
        sec_dst.chmod(0o600)
        written += [pub_dst, sec_dst]
        if name in allow:
            dst = allowed / f"{name}.key"
            shutil.copyfile(pub_dst, dst)
            written.append(dst)
    return written

"""Signing anchors with a key the database never sees (Ed25519, through ``cryptography``).

The runtime's process holds the private key (:func:`sign_anchors` gives it to a store
before it opens); each anchor's hash is signed as it is written and the signature is
stored beside it. ``mainspring audit verify --public-key FILE`` checks them: an attacker
with write access to the database can recompute every event hash, run head and anchor,
but not the signatures, so a rewrite is caught. Keys are PEM files
(:func:`generate_keys`, or ``openssl genpkey -algorithm ed25519``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import MainspringError

Verify = Callable[[bytes, bytes], bool]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # an optional extra
        raise MainspringError(
            f"signing audit anchors needs the cryptography package ({exc}); install it with "
            "pip install 'mainspring[audit]'"
        ) from None
    return ed25519


def load_private_key(source: str | Path | bytes | Any) -> Any:
    """An Ed25519 private key from a PEM file, PEM bytes, 32 raw bytes or a key object."""
    ed25519 = _crypto()
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source
    from cryptography.hazmat.primitives import serialization

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) == 32:
        return ed25519.Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise MainspringError(
            f"{source!r} is not an Ed25519 private key; make one with mainspring audit keygen"
        )
    return key


def load_public_key(source: str | Path | bytes | Any) -> Any:
    """An Ed25519 public key from a PEM file, PEM bytes, 32 raw bytes or a key object."""
    ed25519 = _crypto()
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    from cryptography.hazmat.primitives import serialization

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise MainspringError(f"{source!r} is not an Ed25519 public key")
    return key


def signer(private_key: Any) -> Callable[[bytes], bytes]:
    """A function that signs an anchor hash with ``private_key`` (see :func:`load_private_key`)."""
    key = load_private_key(private_key)
    return key.sign  # type: ignore[no-any-return]


def verifier(public_key: Any) -> Verify:
    """``verify(signature, hash) -> bool`` with ``public_key``."""
    key = load_public_key(public_key)
    from cryptography.exceptions import InvalidSignature

    def verify(signature: bytes, digest: bytes) -> bool:
        try:
            key.verify(signature, digest)
        except InvalidSignature:
            return False
        return True

    return verify


def sign_anchors(store: Any, private_key: Any) -> None:
    """Make ``store`` (or a runtime's store) sign every anchor it writes from now on."""
    target = getattr(store, "store", store)
    settings = getattr(target, "audit", None)
    if settings is None:
        raise MainspringError(
            f"{target!r} keeps no audit chain; use a memory, SQLite or PostgreSQL store"
        )
    settings.signer = signer(private_key)


def generate_keys(private_path: str | Path, public_path: str | Path) -> None:
    """Write a new Ed25519 key pair as PEM files (the private one readable by its owner only)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = Path(private_path)
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(private)
    Path(public_path).write_bytes(public)

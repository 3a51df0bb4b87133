"""Ed25519 signatures over a bundle's manifest.json bytes (no TensorFlow).

The manifest holds the SHA-256 of the model file, so signing the exact manifest
bytes signs the model too. Keys are PEM files: a PKCS#8 private key (mode 0600)
and its SubjectPublicKeyInfo public key next to it as ``KEYFILE.pub``.

The ``signature`` file of a bundle is a small JSON document::

    {"algorithm": "Ed25519", "key_id": "<sha256 of the raw public key, 16 hex>",
     "signature": "<base64 of the 64 signature bytes>"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from alanet.errors import InputError

KeySource = Union[str, "os.PathLike[str]", bytes]
ALGORITHM = "Ed25519"


class SignatureError(InputError):
    """A signature or key that cannot be used or does not verify."""


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    key_id: str


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError as exc:  # pragma: no cover - the device extra installs it
        raise SignatureError("signature: the 'cryptography' package is needed to sign or verify bundles") from exc
    return InvalidSignature, serialization, Ed25519PrivateKey, Ed25519PublicKey


def _raw_public(public_key) -> bytes:
    _, serialization, _, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    """Short fingerprint of a public key: first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_keypair() -> KeyPair:
    """A fresh Ed25519 key pair as PEM bytes."""
    _, serialization, Ed25519PrivateKey, _ = _crypto()
    priv = Ed25519PrivateKey.generate()
    pub = priv.public_key()
    return KeyPair(
        priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        key_id(pub),
    )


def write_keypair(path: str | os.PathLike[str], *, force: bool = False) -> KeyPair:
    """Write a new private key to ``path`` (0600) and its public key to ``path.pub``."""
    path = Path(path)
    pub_path = Path(f"{path}.pub")
    for p in (path, pub_path):
        if p.exists() and not force:
            raise InputError(f"{p}: already exists (use --force to replace it)")
    kp = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(kp.private_pem)
        os.chmod(tmp, 0o600)
        from alanet.atomic import write_bytes

        write_bytes(pub_path, kp.public_pem)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return kp


def _read(source: KeySource, what: str) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), what
    p = Path(source)
    try:
        return p.read_bytes(), str(p)
    except OSError as exc:
        raise SignatureError(f"{p}: cannot read {what}: {exc.strerror}") from None


def load_private_key(source: KeySource):
    """An Ed25519 private key from a PEM file (or PEM bytes)."""
    _, serialization, Ed25519PrivateKey, _ = _crypto()
    data, name = _read(source, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{name}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{name}: not an Ed25519 private key")
    return key


def load_public_key(source: KeySource):
    """An Ed25519 public key from a PEM file, PEM bytes or the 32 raw key bytes."""
    _, serialization, Ed25519PrivateKey, Ed25519PublicKey = _crypto()
    data, name = _read(source, "public key")
    if len(data) == 32 and not data.startswith(b"-----"):
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:  # a private key also names its public key
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"{name}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{name}: not an Ed25519 public key")
    return key


def sign_bytes(data: bytes, signing_key: KeySource) -> bytes:
    """A ``signature`` document (JSON) for these exact bytes: a manifest, or a gateway command."""
    key = load_private_key(signing_key)
    sig = key.sign(data)
    doc = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()), "signature": base64.b64encode(sig).decode()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def parse_signature(signature_bytes: bytes) -> tuple[str, bytes]:
    """(key_id, raw signature) from a ``signature`` file; SignatureError if malformed."""
    try:
        doc = json.loads(signature_bytes)
        if doc.get("algorithm") != ALGORITHM:
            raise SignatureError(f"signature: algorithm {doc.get('algorithm')!r} is not {ALGORITHM}")
        sig = base64.b64decode(doc["signature"], validate=True)
        kid = str(doc.get("key_id", ""))
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise SignatureError("signature: malformed signature file") from None
    if len(sig) != 64:
        raise SignatureError(f"signature: {len(sig)} bytes, an Ed25519 signature has 64")
    return kid, sig


def verify_bytes(data: bytes, signature_bytes: bytes, trusted_keys: Iterable[KeySource]) -> str:
    """Return the key id of the trusted key that signed ``data``; else SignatureError."""
    InvalidSignature, _, _, _ = _crypto()
    _, sig = parse_signature(signature_bytes)
    keys = [load_public_key(k) for k in trusted_keys]
    for key in keys:
        try:
            key.verify(sig, data)
            return key_id(key)
        except InvalidSignature:
            continue
    raise SignatureError("signature: not signed by a trusted key")


sign_manifest = sign_bytes  # the ``signature`` file of a bundle signs manifest.json's exact bytes
verify_manifest = verify_bytes

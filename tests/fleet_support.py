"""Support for the fleet tests and benchmark: a small certificate authority, and real
Mosquitto brokers configured by ``alanet.device.fleet.mosquitto`` (the functions that
wrote the shipped examples): a central broker (TLS, passwords, ACL) and a
gateway-local broker bridged to it. No tests here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import Mosquitto, free_port

from alanet.device.fleet import mosquitto as fm


@dataclass(frozen=True)
class Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_pki(d: Path) -> Pki:
    """Write a fresh CA and a server certificate into ``d`` (EC P-256, valid one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("alanet test fleet CA")).issuer_name(name("alanet test fleet CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(d / "ca.crt", d / "central.crt", d / "central.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pki


def write_passwords(path: Path, users: dict[str, str]) -> None:
    """A Mosquitto password file (hashed by ``mosquitto_passwd -U``)."""
    path.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([exe, "-U", str(path)], check=True, capture_output=True, timeout=60)


class DropInMosquitto(Mosquitto):
    """A Mosquitto laid out like Debian's: a main file (``fm.main_conf``) including ``conf.d/`` drop-ins."""

    def __init__(self, workdir: Path, port: int, dropins: dict[str, str], tls: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, port=port, persistence=True)
        self.dropins = dropins
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def conf_text(self) -> str:
        d = self.workdir / "conf.d"
        d.mkdir(exist_ok=True)
        for name, text in self.dropins.items():
            (d / name).write_text(text)
        return fm.main_conf(self.workdir, self.log, d, user="root")


class Fleet:
    """A central broker (TLS optional, passwords, ACL) and gateway-local brokers bridged to it."""

    def __init__(self, root: Path, tls: bool = True, restart_timeout: tuple[int, int] = (1, 2)) -> None:
        self.root = root
        self.tls = tls
        self.restart_timeout = restart_timeout
        self.pki = make_pki(root / "pki") if tls else None
        self.accounts = fm.Accounts()
        self.passwords = {u: secrets.token_hex(8) for u in (*self.accounts.readers, *self.accounts.deployers)}
        cdir = root / "central"
        cdir.mkdir(parents=True, exist_ok=True)
        self.acl = cdir / "alanet.acl"
        self.acl.write_text(fm.central_acl(self.accounts))
        self.passwd = cdir / "alanet.passwd"
        port = free_port()
        pki = self.pki
        self.central_settings = fm.CentralBroker(
            port=port, bind="127.0.0.1", ca_file=str(pki.ca) if pki else None, cert_file=str(pki.cert) if pki else None,
            key_file=str(pki.key) if pki else None, password_file=str(self.passwd), acl_file=str(self.acl))
        self.central = DropInMosquitto(cdir, port, {"alanet-central.conf": fm.central_conf(self.central_settings)},
                                       tls=tls)
        self.gateways: dict[str, DropInMosquitto] = {}

    def add_gateway(self, gateway: str) -> DropInMosquitto:
        """The broker of gateway ``gateway``, bridged to the central one (not started)."""
        self.passwords[gateway] = secrets.token_hex(8)
        port = free_port()
        conf = fm.gateway_conf(fm.GatewayBroker(
            gateway, "127.0.0.1", self.central.port, ca_file=str(self.pki.ca) if self.pki else None,
            password=self.passwords[gateway], port=port, restart_timeout=self.restart_timeout))
        b = DropInMosquitto(self.root / f"gw-{gateway}", port, {"alanet-bridge.conf": conf})
        self.gateways[gateway] = b
        return b

    def start(self) -> "Fleet":
        write_passwords(self.passwd, self.passwords)
        self.central.start()
        for b in self.gateways.values():
            b.start()
        return self

    def stop(self) -> None:
        for b in self.gateways.values():
            b.stop()
        self.central.stop()

    def central_url(self, user: str) -> str:
        """``mqtt[s]://user:password@127.0.0.1:port`` of the central broker."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}:{self.passwords[user]}@127.0.0.1:{self.central.port}"

    @property
    def ca_file(self) -> str | None:
        return str(self.pki.ca) if self.pki else None

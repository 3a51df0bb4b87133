"""Mosquitto configuration for a fleet: a gateway-local broker bridged to a central one.

Three files, all plain Mosquitto 2.0 configuration (see ``docs/fleet.md``):

- :func:`gateway_conf`: the drop-in for the Mosquitto *on a gateway*
  (``/etc/mosquitto/conf.d/alanet-bridge.conf``): a loopback listener for
  ``alanet run`` and a bridge to the central broker that sends the gateway's alerts,
  status, model and flash replies out (QoS 1; live state QoS 0) and brings its
  ``cmd`` topics in (QoS 1), with a persistent session on both sides so nothing
  queued is dropped while the link is down.
- :func:`central_conf`: the drop-in for the *central* Mosquitto
  (``/etc/mosquitto/conf.d/alanet-central.conf``): a TLS listener, no anonymous
  clients, a password file and an ACL file.
- :func:`central_acl`: the ACL: every gateway (logged in with its gateway id as user
  name) may publish only its own outgoing topics and read only its own commands;
  service accounts read everything (dashboards) or also send commands (deployment).

The topic patterns of the bridge and of the ACL come from one list,
:func:`bridge_topics`, so they cannot disagree. The files shipped in this folder
are this module's output for the example values in :data:`EXAMPLE`
(``tests/test_fleet_config.py`` checks that they still are); the tests start real
Mosquitto brokers from the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alanet.device.config import ID_RE
from alanet.errors import InputError

HERE = Path(__file__).resolve().parent
CONNECTION = "alanet-central"  # the bridge's connection name on the gateway's broker
PLACEHOLDER_PASSWORD = "CHANGE-ME"
GW = "%u"  # Mosquitto's ACL pattern for "the user name", which is the gateway id


@dataclass(frozen=True)
class BridgeTopic:
    """One topic pattern the bridge carries: ``out`` = gateway → central, ``in`` = central → gateway."""

    pattern: str
    direction: str
    qos: int


def _topics(gateway: str, homeassistant_prefix: str | None = None) -> tuple[BridgeTopic, ...]:
    from alanet.device.flash import protocol as P

    t = (
        BridgeTopic(f"alanet/{gateway}/+/alert", "out", 1),  # runtime: alanet/<gw>/<wearer>/alert, QoS 1
        BridgeTopic(f"alanet/{gateway}/+/state", "out", 0),  # live state, QoS 0: dropped while the link is down
        BridgeTopic(P.status_topic(gateway), "out", 1),  # retained, last will "offline"
        BridgeTopic(P.model_topic(gateway), "out", 1),  # retained: the model in use, last flash outcome
        BridgeTopic(P.reply_topic(gateway, "#"), "out", 1),  # flash replies: alanet/<gw>/flash/<tid>
        BridgeTopic(f"{P.cmd_prefix(gateway)}/#", "in", 1),  # flash chunks, rollback
    )
    if homeassistant_prefix:
        from alanet.device.homeassistant import node_id

        node = "alanet_%u" if gateway == GW else node_id(gateway)
        t += (BridgeTopic(f"{homeassistant_prefix}/+/{node}/+/config", "out", 1),)
    return t


def notification_topic(gateway: str) -> str:
    """Where the bridge reports its link, retained: ``1`` up, ``0`` down (set by the bridge's will)."""
    return f"alanet/{gateway}/bridge"


def _check_id(gateway: str, what: str = "--gateway") -> None:
    if not isinstance(gateway, str) or not ID_RE.match(gateway):
        raise InputError(f"{what}: {gateway!r} is not a gateway id (letters, digits, '_', '-', '.'; up to 64)")


def bridge_topics(gateway: str, homeassistant_prefix: str | None = None) -> tuple[BridgeTopic, ...]:
    """What one gateway's bridge carries (the ACL grants exactly these, plus the notification topic)."""
    _check_id(gateway)
    return _topics(gateway, homeassistant_prefix)


def _line_value(v: object, what: str) -> str:
    s = str(v)
    if not s or any(c in s for c in "\n\r\0") or s != s.strip():
        raise InputError(f"{what}: {s!r} cannot go into a Mosquitto configuration line")
    return s


@dataclass(frozen=True)
class GatewayBroker:
    """Settings of one gateway's Mosquitto and its bridge (see :func:`gateway_conf`).

    ``ca_file`` None means a plain TCP bridge (only on a network you trust, or in
    tests); ``cert_file``/``key_file`` add a client certificate. ``password`` is the
    gateway's password on the central broker (its user name is the gateway id).
    """

    gateway: str
    central_host: str
    central_port: int = 8883
    ca_file: str | None = "/etc/mosquitto/certs/alanet-fleet-ca.crt"
    cert_file: str | None = None
    key_file: str | None = None
    password: str | None = PLACEHOLDER_PASSWORD
    listen: str = "127.0.0.1"
    port: int = 1883
    restart_timeout: tuple[int, int] = (2, 60)
    keepalive_s: int = 30
    max_queued_messages: int = 100_000
    homeassistant_prefix: str | None = None


@dataclass(frozen=True)
class CentralBroker:
    """Settings of the central Mosquitto (see :func:`central_conf`).

    ``ca_file``/``cert_file``/``key_file`` None: a plain TCP listener (loopback tests
    and benchmarks only). ``require_certificate``: gateways must also present a client
    certificate signed by ``ca_file``.
    """

    port: int = 8883
    bind: str | None = None  # all interfaces
    ca_file: str | None = "/etc/mosquitto/certs/alanet-fleet-ca.crt"
    cert_file: str | None = "/etc/mosquitto/certs/central.crt"
    key_file: str | None = "/etc/mosquitto/certs/central.key"
    require_certificate: bool = False
    password_file: str = "/etc/mosquitto/alanet.passwd"
    acl_file: str = "/etc/mosquitto/alanet.acl"
    max_queued_messages: int = 100_000
    persistent_client_expiration: str = "14d"


@dataclass(frozen=True)
class Accounts:
    """Who else logs in to the central broker (besides the gateways): see :func:`central_acl`."""

    readers: tuple[str, ...] = ("dashboard",)  # alanet alerts, alanet live, Node-RED, ...
    deployers: tuple[str, ...] = ("deploy",)  # alanet flash
    homeassistant_prefix: str | None = None


def gateway_conf(s: GatewayBroker) -> str:
    """The Mosquitto drop-in for gateway ``s.gateway`` (its own broker plus the bridge)."""
    _check_id(s.gateway)
    host = _line_value(s.central_host, "--central")
    if not 1 <= s.central_port <= 65535:
        raise InputError(f"--central: port {s.central_port} is not in 1..65535")
    if (s.cert_file is None) != (s.key_file is None):
        raise InputError("--cert-file/--key-file: give both or neither")
    if s.password is None and s.cert_file is None:
        raise InputError("--password-file: the bridge needs a password or a client certificate")
    base, cap = s.restart_timeout
    gw = s.gateway
    lines = [
        f"# Mosquitto on gateway {gw}: its own broker, bridged to the fleet's central broker.",
        "# Install as /etc/mosquitto/conf.d/alanet-bridge.conf next to Debian's mosquitto.conf (which sets",
        "# persistence, its location and the log file). It holds the gateway's password:",
        "#   chown root:mosquitto alanet-bridge.conf && chmod 640 alanet-bridge.conf",
        "# Written by `alanet fleet-config gateway`; see docs/fleet.md.",
        "",
        "# `alanet run` on this machine connects here (broker = \"mqtt://127.0.0.1:1883\").",
        f"listener {s.port} {_line_value(s.listen, 'listen')}",
        "allow_anonymous true",
        "",
        "# While the central broker is away this broker holds everything for it: keep a lot, and",
        "# save to disk after every change, so a power cut loses nothing the gateway handed over.",
        f"max_queued_messages {s.max_queued_messages}",
        "autosave_on_changes true",
        "autosave_interval 1",
        "set_tcp_nodelay true",
        "",
        f"connection {CONNECTION}",
        f"address {host}:{s.central_port}",
    ]
    if s.ca_file:
        lines.append(f"bridge_cafile {_line_value(s.ca_file, '--ca-file')}")
    else:
        lines.append("# no TLS: only on a network you trust")
    if s.cert_file:
        lines += [f"bridge_certfile {_line_value(s.cert_file, '--cert-file')}",
                  f"bridge_keyfile {_line_value(s.key_file, '--key-file')}"]
    lines += [
        "bridge_protocol_version mqttv311",
        f"remote_clientid alanet-bridge-{gw}",
        f"remote_username {gw}",
    ]
    if s.password is not None:
        lines.append(f"remote_password {_line_value(s.password, 'password')}")
    lines += [
        "# A persistent session on both brokers: commands wait on the central broker while the",
        "# link is down, and the gateway's messages wait here.",
        "cleansession false",
        f"keepalive_interval {s.keepalive_s}",
        f"restart_timeout {base} {cap}",
        "notifications true",
        f"notification_topic {notification_topic(gw)}",
    ]
    for t in _topics(gw, s.homeassistant_prefix):
        lines.append(f"topic {t.pattern} {t.direction} {t.qos}")
    return "\n".join(lines) + "\n"


def central_conf(c: CentralBroker) -> str:
    """The Mosquitto drop-in for the central broker."""
    if not 1 <= c.port <= 65535:
        raise InputError(f"--port: {c.port} is not in 1..65535")
    tls = [c.ca_file, c.cert_file, c.key_file]
    if any(tls) and not all(tls):
        raise InputError("--ca-file/--cert-file/--key-file: a TLS listener needs all three")
    lines = [
        "# The fleet's central Mosquitto: gateways' bridges, dashboards and `alanet flash` connect here.",
        "# Install as /etc/mosquitto/conf.d/alanet-central.conf next to Debian's mosquitto.conf. Mosquitto",
        "# reads the key, password and ACL files as user mosquitto: chgrp mosquitto them, chmod 640.",
        "# Written by `alanet fleet-config central`; see docs/fleet.md.",
        "",
        "per_listener_settings false",
        f"listener {c.port}" + (f" {_line_value(c.bind, '--bind')}" if c.bind else ""),
    ]
    if all(tls):
        lines += [f"cafile {_line_value(c.ca_file, '--ca-file')}",
                  f"certfile {_line_value(c.cert_file, '--cert-file')}",
                  f"keyfile {_line_value(c.key_file, '--key-file')}"]
        if c.require_certificate:
            lines.append("require_certificate true")
    else:
        lines.append("# no TLS: loopback tests and benchmarks only")
    lines += [
        "allow_anonymous false",
        f"password_file {_line_value(c.password_file, 'password_file')}",
        f"acl_file {_line_value(c.acl_file, 'acl_file')}",
        "",
        "# Send every message at once (no Nagle delay of up to 40 ms behind a delayed TCP ack).",
        "set_tcp_nodelay true",
        "# QoS 1 messages wait here for offline subscribers and for gateways whose link is down (a",
        "# fleet flash queues every chunk per such gateway): the default of 1000 drops them.",
        f"max_queued_messages {c.max_queued_messages}",
        "# Forget sessions of clients gone this long (a gateway taken out of service).",
        f"persistent_client_expiration {_line_value(c.persistent_client_expiration, 'persistent_client_expiration')}",
        "autosave_interval 60",
    ]
    return "\n".join(lines) + "\n"


def central_acl(a: Accounts = Accounts()) -> str:
    """The central broker's ACL file: gateways by pattern, then the service accounts."""
    for name in (*a.readers, *a.deployers):
        _check_id(name, "account")
    lines = [
        "# ACL of the fleet's central Mosquitto (acl_file). See docs/fleet.md.",
        "# Every gateway logs in with its gateway id as user name (its bridge's remote_username) and",
        "# may publish only its own outgoing topics and read only its own commands. No gateway may be",
        "# named like a service account below.",
        "# Written by `alanet fleet-config central`.",
        "",
    ]
    for t in _topics(GW, a.homeassistant_prefix):
        lines.append(f"pattern {'write' if t.direction == 'out' else 'read'} {t.pattern}")
    lines.append(f"pattern write {notification_topic(GW)}")
    watch = ["alanet/+/+/alert", "alanet/+/+/state", "alanet/+/status", "alanet/+/model", notification_topic("+")]
    for user in a.readers:
        lines += ["", f"# {user}: read-only (alanet alerts, alanet live, dashboards)", f"user {user}"]
        lines += [f"topic read {t}" for t in watch]
    for user in a.deployers:
        lines += ["", f"# {user}: alanet flash (sends commands, reads the replies)", f"user {user}"]
        lines += [f"topic read {t}" for t in watch[2:]]
        lines += ["topic write alanet/+/cmd/#", "topic read alanet/+/flash/#"]
    return "\n".join(lines) + "\n"


def main_conf(persistence_dir: str | Path, log_file: str | Path, include_dir: str | Path,
              user: str | None = None) -> str:
    """What Debian's ``/etc/mosquitto/mosquitto.conf`` sets, for hosts without it and for tests."""
    lines = [f"user {user}"] if user else []
    lines += ["persistence true", f"persistence_location {Path(persistence_dir)}/", f"log_dest file {log_file}",
              f"include_dir {include_dir}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Example:
    """The values of the example files shipped in this folder."""

    gateway: GatewayBroker = field(default_factory=lambda: GatewayBroker("ward3-bed2", "central.clinic.example"))
    central: CentralBroker = field(default_factory=CentralBroker)
    accounts: Accounts = field(default_factory=Accounts)

    def files(self) -> dict[str, str]:
        """File name → text of every shipped example."""
        return {"gateway-bridge.conf": gateway_conf(self.gateway), "central.conf": central_conf(self.central),
                "central.acl": central_acl(self.accounts)}


EXAMPLE = Example()


# --------------------------------------------------------------------------- command


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        return value, default_port
    if not port.isdigit():
        raise InputError(f"--central: {value!r}: the port must be a number")
    return host.strip("[]"), int(port)


def _read_password(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"--password-file: {path}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise InputError(f"--password-file: {path}: empty")
    return lines[0].strip()


def _write(path: Path, text: str, mode: int) -> None:
    from alanet.atomic import write_text

    try:
        write_text(path, text, mode)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None


def cmd_fleet_config(args) -> int:
    """``alanet fleet-config gateway|central``: write (or print) the Mosquitto files of a fleet."""
    import sys

    if args.which == "gateway":
        host, port = _host_port(args.central, 8883 if not args.no_tls else 1883)
        if args.no_tls and args.ca_file:
            raise InputError("--no-tls: give either --ca-file or --no-tls")
        password = _read_password(args.password_file)
        placeholder = password is None and not args.cert_file
        if placeholder:
            password = PLACEHOLDER_PASSWORD
        s = GatewayBroker(args.gateway, host, port,
                          ca_file=None if args.no_tls else (args.ca_file or GatewayBroker.ca_file),
                          cert_file=args.cert_file, key_file=args.key_file, password=password,
                          homeassistant_prefix=args.homeassistant_prefix)
        text = gateway_conf(s)
        if placeholder:
            print(f"note: no --password-file: the file says remote_password {PLACEHOLDER_PASSWORD}; put the "
                  "gateway's password there", file=sys.stderr)
        if args.out:
            _write(Path(args.out), text, 0o640)  # holds the password
            print(f"wrote {args.out} (mode 640: chown root:mosquitto it)", file=sys.stderr)
        else:
            sys.stdout.write(text)
        return 0
    tls = not args.no_tls
    if not tls and (args.ca_file or args.cert_file or args.key_file):
        raise InputError("--no-tls: give either TLS files or --no-tls")
    c = CentralBroker(port=args.port or (8883 if tls else 1883), bind=args.bind,
                      ca_file=(args.ca_file or CentralBroker.ca_file) if tls else None,
                      cert_file=(args.cert_file or CentralBroker.cert_file) if tls else None,
                      key_file=(args.key_file or CentralBroker.key_file) if tls else None,
                      require_certificate=args.require_certificate,
                      acl_file=args.acl_file or CentralBroker.acl_file,
                      password_file=args.password_file or CentralBroker.password_file)
    acc = Accounts(readers=tuple(args.reader or Accounts.readers), deployers=tuple(args.deployer or Accounts.deployers),
                   homeassistant_prefix=args.homeassistant_prefix)
    conf, acl = central_conf(c), central_acl(acc)
    if args.out_dir:
        d = Path(args.out_dir)
        _write(d / "alanet-central.conf", conf, 0o644)
        _write(d / "alanet.acl", acl, 0o640)
        print(f"wrote {d / 'alanet-central.conf'} (to /etc/mosquitto/conf.d/) and {d / 'alanet.acl'} "
              f"(to {c.acl_file}; chgrp mosquitto it)", file=sys.stderr)
    else:
        sys.stdout.write(conf + "\n# ---- " + c.acl_file + "\n" + acl)
    return 0

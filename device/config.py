"""Gateway configuration: a TOML file plus command-line flags, checked at start.

Every key is known; an unknown key or a bad value stops the gateway before it opens
anything, with the key named (``gateway.toml: mqtt.keepalive: must be an integer
>= 5``). See ``gateway.example.toml`` next to this module for every key.
"""

from __future__ import annotations

import os
import re
import socket
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from alanet.errors import InputError

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_BAUD = 115200
MQTT_PROTOCOLS = ("5", "3.1.1")
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
_CREDENTIALS = re.compile(r"(//[^/@?#:]*:)[^/?#]*@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, messages and payloads)."""
    return _CREDENTIALS.sub(r"\1***@", str(url))


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the MQTT broker."""

    url: str = DEFAULT_BROKER  # for display: never holds the password (see redact_url)
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str | None = None
    keepalive: int = 30
    protocol: str | None = None  # MQTT version: "5" (PUBACK reason codes), "3.1.1", or None: 5, else 3.1.1


@dataclass(frozen=True)
class WearableConfig:
    """One wearable on one serial port, published under the pseudonym ``wearer``."""

    wearer: str
    port: str
    baud: int = DEFAULT_BAUD


@dataclass(frozen=True)
class SessionsConfig:
    """``[sessions]``: rehab sessions started from the live page or MQTT (see docs/rehab.md)."""

    enabled: bool = True  # accept alanet/<gateway>/cmd/{session,exercise}
    dir: str | None = None  # default <state_dir>/sessions
    raw_frames: bool = False  # also log raw angles and sEMG of session frames (off: no raw biosignals)
    history: int = 50  # finished sessions kept in each wearer's retained history


@dataclass(frozen=True)
class GatewayConfig:
    gateway: str
    bundle: str
    state_dir: str
    broker: BrokerConfig
    wearables: tuple[WearableConfig, ...]
    trusted_keys: tuple[str, ...] = ()
    allow_unsigned: bool = True
    flash_enabled: bool = True  # [flash] enabled: accept `alanet flash` over MQTT
    flash_allow_unsigned: bool = False  # [flash] allow_unsigned: only without trusted_keys
    heartbeat_s: float = 10.0
    publish_state: bool = True
    # [mqtt] several wearers: live state waits up to this long to go out with others (paho's network thread
    # then wakes once for several messages); alerts never wait. One wearer: each state at once
    state_hold_ms: float = 100.0
    max_gap_frames: int = 3
    batch_wait_ms: float = 20.0  # [runtime] longest a due window waits for others to share its model invoke
    batch_max: int = 0  # [runtime] windows per classify call: 0 = the model's largest native batch, at least 16; 1 = no batching
    # [runtime] longest a wearer's serial data waits when it completes no window (under load 1.5 times that
    # before windows: 600 ms, within the ~0.81 s a 4 KiB serial buffer holds of one 60 Hz wearable)
    read_hold_ms: float = 400.0
    homeassistant_discovery: bool = False
    homeassistant_prefix: str = "homeassistant"
    retry_max_s: float = 300.0  # longest wait before alerts the broker refused are sent again
    ack_timeout_s: float = 60.0  # reconnect when the broker acknowledges nothing this long
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    source: str = "<flags>"  # where the config came from, for messages

    @property
    def queue_path(self) -> Path:
        return Path(self.state_dir) / "alerts.sqlite"

    @property
    def sessions_dir(self) -> Path:
        return Path(self.sessions.dir) if self.sessions.dir else Path(self.state_dir) / "sessions"


def _where(src: str, key: str) -> str:
    return f"{src}: {key}"


def _str(src: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise InputError(f"{_where(src, key)}: must be a non-empty string, got {v!r}")
    return v


def _int(src: str, key: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InputError(f"{_where(src, key)}: must be an integer {rng}, got {v!r}")
    return v


def _num(src: str, key: str, v: Any, lo: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= lo:
        raise InputError(f"{_where(src, key)}: must be a number >= {lo}, got {v!r}")
    return float(v)


def _bool(src: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InputError(f"{_where(src, key)}: must be true or false, got {v!r}")
    return v


def _ident(src: str, key: str, v: Any) -> str:
    v = _str(src, key, v)
    if not ID_RE.match(v):
        raise InputError(f"{_where(src, key)}: {v!r} is not a valid id (letters, digits, '_', '-', '.'; "
                         "at most 64; no '/', '+', '#', spaces)")
    return v


def _file(src: str, key: str, v: Any) -> str:
    v = _str(src, key, v)
    if not Path(v).expanduser().is_file():
        raise InputError(f"{_where(src, key)}: file not found: {v}")
    return str(Path(v).expanduser())


def parse_broker_url(url: str, src: str = "<flags>", key: str = "mqtt.broker") -> BrokerConfig:
    """``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://…`` (TLS, default port 8883).

    The returned ``url`` is redacted (``mqtt://user:***@host``): it is what logs show.
    """
    shown = redact_url(url)
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise InputError(f"{_where(src, key)}: bad broker URL {shown!r}: {redact_url(str(exc))}") from None
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise InputError(f"{_where(src, key)}: bad broker URL {shown!r} (expected mqtt://host[:port] or mqtts://host[:port])")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise InputError(f"{_where(src, key)}: bad broker URL {shown!r}: no path or query allowed")
    tls = u.scheme == "mqtts"
    return BrokerConfig(url=shown, host=u.hostname, port=port or (8883 if tls else 1883), tls=tls,
                        username=unquote(u.username) if u.username else None,
                        password=unquote(u.password) if u.password else None)


SECTIONS: dict[str, set[str]] = {
    "": {"gateway", "state_dir", "model", "mqtt", "wearable", "runtime", "homeassistant", "flash", "sessions"},
    "model": {"bundle", "trusted_keys", "allow_unsigned"},
    "mqtt": {"broker", "username", "password", "password_file", "ca_file", "cert_file", "key_file", "client_id",
             "keepalive", "heartbeat_s", "publish_state", "state_hold_ms", "protocol", "retry_max_s", "ack_timeout_s"},
    "wearable": {"wearer", "port", "baud"},
    "runtime": {"max_gap_frames", "batch_wait_ms", "batch_max", "read_hold_ms"},
    "homeassistant": {"discovery", "prefix"},
    "flash": {"enabled", "allow_unsigned"},
    "sessions": {"enabled", "dir", "raw_frames", "history"},
}


def _check_keys(src: str, prefix: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    for k in d:
        if k not in allowed:
            name = f"{prefix}.{k}" if prefix else k
            raise InputError(f"{_where(src, name)}: unknown key (known: {', '.join(sorted(allowed))})")


def _table(src: str, key: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise InputError(f"{_where(src, key)}: must be a table ([{key}])")
    return v


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/alanet"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "alanet")


def machine_suffix(id_files: Sequence[str | os.PathLike[str]] = MACHINE_ID_FILES) -> str:
    """8 hex digits that tell this machine from others: its machine-id, else its MAC address; "" if neither."""
    for f in id_files:
        try:
            mid = Path(f).read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[0-9a-f]{32}", mid) and mid.strip("0"):
            return mid[:8]
    node = uuid.getnode()
    if not node >> 40 & 1:  # a real MAC address (getnode sets the multicast bit on a random one)
        return f"{node:012x}"[-8:]
    return ""


def default_gateway_id(id_files: Sequence[str | os.PathLike[str]] = MACHINE_ID_FILES) -> str:
    """``<host name>-<machine suffix>``: every Raspberry Pi is called ``raspberrypi``, so the host
    name alone would give a fleet one gateway id (and one MQTT client id): topics and sessions would collide."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:55].strip("-.") or "gateway"
    if not ID_RE.match(name):
        name = "gateway"
    suffix = machine_suffix(id_files)
    return f"{name}-{suffix}" if suffix else name


def load_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
    """Read the TOML file (if any), apply flag ``overrides`` and check every value.

    ``overrides`` keys: port, baud, bundle, broker, gateway, wearer, state_dir (None = unset).
    Raises :class:`InputError` naming the file and key on any problem.
    """
    raw: dict[str, Any] = {}
    src = "<flags>"
    if path is not None:
        src = str(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise InputError(f"{src}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{src}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise InputError(f"{src}: cannot read: {exc.strerror}") from None
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}

    _check_keys(src, "", raw, SECTIONS[""])
    model = _table(src, "model", raw.get("model", {}))
    mqtt = _table(src, "mqtt", raw.get("mqtt", {}))
    runtime = _table(src, "runtime", raw.get("runtime", {}))
    flash = _table(src, "flash", raw.get("flash", {}))
    ha = _table(src, "homeassistant", raw.get("homeassistant", {}))
    sessions = _table(src, "sessions", raw.get("sessions", {}))
    for name, d in (("model", model), ("mqtt", mqtt), ("runtime", runtime), ("homeassistant", ha), ("flash", flash),
                    ("sessions", sessions)):
        _check_keys(src, name, d, SECTIONS[name])

    gateway = _ident("--gateway" if "gateway" in ov else src, "gateway", ov.get("gateway", raw.get("gateway", default_gateway_id())))
    state_dir = _str(src, "state_dir", ov.get("state_dir", raw.get("state_dir", default_state_dir())))

    if "bundle" in ov:
        bundle = _str("--bundle", "bundle", ov["bundle"])
    elif "bundle" in model:
        bundle = _str(src, "model.bundle", model["bundle"])
        if not Path(bundle).is_absolute() and path is not None:
            bundle = str(Path(path).resolve().parent / bundle)
    else:
        raise InputError(f"{_where(src, 'model.bundle')}: no model bundle given (set model.bundle or --bundle)")
    tk = model.get("trusted_keys", [])
    if not isinstance(tk, list):
        raise InputError(f"{_where(src, 'model.trusted_keys')}: must be a list of key files")
    trusted = tuple(_file(src, f"model.trusted_keys[{i}]", k) for i, k in enumerate(tk))
    allow_unsigned = _bool(src, "model.allow_unsigned", model.get("allow_unsigned", True))
    flash_enabled = _bool(src, "flash.enabled", flash.get("enabled", True))
    flash_allow_unsigned = _bool(src, "flash.allow_unsigned", flash.get("allow_unsigned", False))

    bsrc = "--broker" if "broker" in ov else src
    broker = parse_broker_url(_str(bsrc, "mqtt.broker", ov.get("broker", mqtt.get("broker", DEFAULT_BROKER))), bsrc)
    upd: dict[str, Any] = {}
    if "username" in mqtt:
        upd["username"] = _str(src, "mqtt.username", mqtt["username"])
    if "password" in mqtt and "password_file" in mqtt:
        raise InputError(f"{_where(src, 'mqtt.password_file')}: give password or password_file, not both")
    if "password" in mqtt:
        upd["password"] = _str(src, "mqtt.password", mqtt["password"])
    if "password_file" in mqtt:
        pf = _file(src, "mqtt.password_file", mqtt["password_file"])
        try:
            upd["password"] = Path(pf).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"{_where(src, 'mqtt.password_file')}: cannot read {pf}: {exc.strerror} "
                             "(the gateway's user must be able to read it)") from None
        except UnicodeDecodeError:
            raise InputError(f"{_where(src, 'mqtt.password_file')}: {pf} is not UTF-8 text") from None
        if not upd["password"]:
            raise InputError(f"{_where(src, 'mqtt.password_file')}: {pf} is empty")
    for k in ("ca_file", "cert_file", "key_file"):
        if k in mqtt:
            upd[k] = _file(src, f"mqtt.{k}", mqtt[k])
    if ("cert_file" in upd) != ("key_file" in upd):
        raise InputError(f"{_where(src, 'mqtt.cert_file')}: cert_file and key_file go together")
    if (upd.get("ca_file") or upd.get("cert_file")) and not broker.tls:
        raise InputError(f"{_where(src, 'mqtt.ca_file')}: TLS files need an mqtts:// broker URL")
    if "client_id" in mqtt:
        upd["client_id"] = _str(src, "mqtt.client_id", mqtt["client_id"])
    if "keepalive" in mqtt:
        upd["keepalive"] = _int(src, "mqtt.keepalive", mqtt["keepalive"], 5, 3600)
    if "protocol" in mqtt:
        proto = mqtt["protocol"]
        if isinstance(proto, (int, float)) and not isinstance(proto, bool):
            proto = f"{proto:g}"
        if proto not in MQTT_PROTOCOLS:
            raise InputError(f"{_where(src, 'mqtt.protocol')}: must be \"5\" or \"3.1.1\", got {mqtt['protocol']!r}")
        upd["protocol"] = proto
    broker = replace(broker, **upd)
    if broker.password and not broker.username:
        raise InputError(f"{_where(src, 'mqtt.password')}: a password needs mqtt.username")
    heartbeat = _num(src, "mqtt.heartbeat_s", mqtt.get("heartbeat_s", 10.0), 0.1)
    retry_max = _num(src, "mqtt.retry_max_s", mqtt.get("retry_max_s", 300.0), 1.0)
    ack_timeout = _num(src, "mqtt.ack_timeout_s", mqtt.get("ack_timeout_s", 60.0), 1.0)
    publish_state = _bool(src, "mqtt.publish_state", mqtt.get("publish_state", True))
    state_hold = _num(src, "mqtt.state_hold_ms", mqtt.get("state_hold_ms", GatewayConfig.state_hold_ms), 0.0)
    if state_hold > 1000.0:
        raise InputError(f"{_where(src, 'mqtt.state_hold_ms')}: must be at most 1000 (ms), got {state_hold:g}")
    max_gap = _int(src, "runtime.max_gap_frames", runtime.get("max_gap_frames", 3), 0, 600)
    batch_wait = _num(src, "runtime.batch_wait_ms", runtime.get("batch_wait_ms", 20.0), 0.0)
    if batch_wait > 1000.0:
        raise InputError(f"{_where(src, 'runtime.batch_wait_ms')}: must be at most 1000 (ms), got {batch_wait:g}")
    batch_max = _int(src, "runtime.batch_max", runtime.get("batch_max", 0), 0, 4096)
    read_hold = _num(src, "runtime.read_hold_ms", runtime.get("read_hold_ms", GatewayConfig.read_hold_ms), 0.0)
    if read_hold > 1000.0:
        raise InputError(f"{_where(src, 'runtime.read_hold_ms')}: must be at most 1000 (ms), got {read_hold:g}")

    ha_discovery = _bool(src, "homeassistant.discovery", ha.get("discovery", False))
    ha_prefix = _str(src, "homeassistant.prefix", ha.get("prefix", "homeassistant")).strip("/")
    if not ha_prefix or any(c in ha_prefix for c in "+#"):
        raise InputError(f"{_where(src, 'homeassistant.prefix')}: must be a non-empty topic prefix without + or #")

    sess = SessionsConfig(enabled=_bool(src, "sessions.enabled", sessions.get("enabled", True)),
                          dir=_str(src, "sessions.dir", sessions["dir"]) if "dir" in sessions else None,
                          raw_frames=_bool(src, "sessions.raw_frames", sessions.get("raw_frames", False)),
                          history=_int(src, "sessions.history", sessions.get("history", 50), 1, 1000))
    wearables = _wearables(src, raw.get("wearable", []), ov)
    return GatewayConfig(gateway=gateway, bundle=bundle, state_dir=state_dir, broker=broker,
                         wearables=wearables, trusted_keys=trusted, allow_unsigned=allow_unsigned,
                         flash_enabled=flash_enabled, flash_allow_unsigned=flash_allow_unsigned,
                         heartbeat_s=heartbeat, publish_state=publish_state, state_hold_ms=state_hold,
                         max_gap_frames=max_gap,
                         batch_wait_ms=batch_wait, batch_max=batch_max, read_hold_ms=read_hold,
                         homeassistant_discovery=ha_discovery, homeassistant_prefix=ha_prefix,
                         retry_max_s=retry_max, ack_timeout_s=ack_timeout, sessions=sess, source=src)


def _wearables(src: str, items: Any, ov: Mapping[str, Any]) -> tuple[WearableConfig, ...]:
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise InputError(f"{_where(src, 'wearable')}: must be an array of tables ([[wearable]])")
    out: list[WearableConfig] = []
    for i, w in enumerate(items):
        key = f"wearable[{i}]"
        w = _table(src, key, w)
        _check_keys(src, key, w, SECTIONS["wearable"])
        if "port" not in w:
            raise InputError(f"{_where(src, key + '.port')}: missing")
        out.append(WearableConfig(wearer=_ident(src, f"{key}.wearer", w.get("wearer", f"w{i + 1}")),
                                  port=_str(src, f"{key}.port", w["port"]),
                                  baud=_int(src, f"{key}.baud", w.get("baud", DEFAULT_BAUD), 1)))
    if "port" in ov:
        baud = _int("--baud", "baud", ov.get("baud", out[0].baud if out else DEFAULT_BAUD), 1)
        wearer = _ident("--wearer", "wearer", ov.get("wearer", out[0].wearer if out else "w1"))
        out = [WearableConfig(wearer, _str("--port", "port", ov["port"]), baud)]
    else:
        if "baud" in ov:
            baud = _int("--baud", "baud", ov["baud"], 1)
            out = [replace(w, baud=baud) for w in out]
        if "wearer" in ov:
            if len(out) != 1:
                raise InputError("--wearer: only with a single wearable (or together with --port)")
            out = [replace(out[0], wearer=_ident("--wearer", "wearer", ov["wearer"]))]
    if not out:
        raise InputError(f"{_where(src, 'wearable')}: no serial port given (add a [[wearable]] with a port, or --port)")
    seen: set[str] = set()
    for w in out:
        if w.wearer in seen:
            raise InputError(f"{_where(src, 'wearable.wearer')}: duplicate wearer {w.wearer!r}")
        seen.add(w.wearer)
    return tuple(out)

"""Home Assistant MQTT discovery for a gateway's wearers.

With ``homeassistant_discovery = true`` the gateway announces, per wearer, retained
on ``<prefix>/<component>/alanet_<gateway>/<wearer>_<what>/config``:

- a ``binary_sensor`` "Protective behaviour" (device class ``problem``), ON while the
  gateway's decision is active (``state == "active"`` on ``alanet/<gw>/<wearer>/state``);
- a ``sensor`` "Pain level" (the confirmed level's label from the same topic);
- availability per wearer from the gateway's retained status topic: available while
  the gateway is ``online`` (its last will says ``offline``) **and** its status lists
  the wearer with ``serial == "up"`` (so a wearable that stops streaming, or a wearer
  taken out of the gateway's config, shows as unavailable).

:func:`removal_messages` returns the empty retained payloads that make Home Assistant
delete a wearer's entities; :func:`sync_messages` with :func:`load_announced` /
:func:`save_announced` (a small JSON file in the gateway's state directory) works out
at start which wearers announced by an earlier run must be removed. The functions only
build messages: the caller publishes them (QoS 1, ``retain=True``). The format is
documented in ``docs/subscribers.md``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

DEFAULT_PREFIX = "homeassistant"
ORIGIN = {"name": "ALANet Edge"}
_SAFE = re.compile(r"[^A-Za-z0-9_-]")

PROTECTIVE_TEMPLATE = "{{ 'ON' if value_json.state == 'active' else 'OFF' }}"
PAIN_TEMPLATE = ("{% if value_json.task is defined and value_json.task != 'pain' %}None"
                 "{% elif value_json.state is none %}None{% else %}{{ value_json.state }}{% endif %}")
# available = gateway online and the wearer's serial link up (``status.wearers.<wearer>.serial``)
AVAILABILITY_TEMPLATE = ("{{% set w = (value_json.wearers | default({{}})).get('{wearer}') %}}"
                         "{{{{ 'online' if value_json.state == 'online' and w and w.serial | default('up') == 'up' "
                         "else 'offline' }}}}")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class DiscoveryMessage:
    """One retained message to publish: ``payload`` None means an empty payload (removal)."""

    topic: str
    payload: dict[str, Any] | None
    retain: bool = True

    def encode(self) -> bytes:
        """The bytes to publish: compact JSON, or empty for a removal."""
        if self.payload is None:
            return b""
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


def _safe(s: str) -> str:
    return _SAFE.sub("_", s)


def _check(gateway: str, wearer: str, prefix: str) -> None:
    for name, v in (("gateway", gateway), ("wearer", wearer)):
        if not isinstance(v, str) or not _ID.match(v):
            raise ValueError(f"homeassistant discovery: bad {name} id {v!r} (letters, digits, '_', '-', '.')")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#\x00") or prefix.strip("/") != prefix:
        raise ValueError(f"homeassistant discovery: bad prefix {prefix!r}")


def node_id(gateway: str) -> str:
    """The discovery node id of a gateway: ``alanet_<gateway>`` (only ``[A-Za-z0-9_-]``)."""
    return f"alanet_{_safe(gateway)}"


def config_topics(gateway: str, wearer: str, prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """``{"protective": topic, "pain": topic}`` of one wearer's discovery configs."""
    _check(gateway, wearer, prefix)
    node, w = node_id(gateway), _safe(wearer)
    return {"protective": f"{prefix}/binary_sensor/{node}/{w}_protective/config",
            "pain": f"{prefix}/sensor/{node}/{w}_pain/config"}


def discovery_messages(gateway: str, wearer: str, *, model_id: str | None = None, prefix: str = DEFAULT_PREFIX,
                       task: str | None = None, pain_labels: Sequence[str] | None = None,
                       sw_version: str | None = None) -> list[DiscoveryMessage]:
    """The retained discovery configs announcing one wearer's entities.

    ``task`` (``"protective"`` or ``"pain"``) announces only that task's entity (and
    removes the other one with an empty config); None announces both.
    ``pain_labels`` (the bundle's pain labels) make the pain sensor an ``enum``.
    """
    if task not in (None, "protective", "pain"):
        raise ValueError(f"homeassistant discovery: task must be 'protective', 'pain' or None, got {task!r}")
    topics = config_topics(gateway, wearer, prefix)
    base_id = f"alanet_{_safe(gateway)}_{_safe(wearer)}"
    state_topic = f"alanet/{gateway}/{wearer}/state"
    if sw_version is None:
        from alanet import __version__ as sw_version  # noqa: PLC0415
    device = {
        "identifiers": [base_id],
        "name": f"ALANet {wearer} ({gateway})",
        "manufacturer": "ALANet Edge",
        "model": model_id or "ALANet gateway",
        "sw_version": sw_version,
    }
    availability = [{"topic": f"alanet/{gateway}/status", "value_template": AVAILABILITY_TEMPLATE.format(wearer=wearer),
                      "payload_available": "online", "payload_not_available": "offline"}]
    common = {"state_topic": state_topic, "availability": availability,
              "device": device, "origin": dict(ORIGIN, sw=sw_version), "qos": 0}
    protective = dict(common, name="Protective behaviour", unique_id=f"{base_id}_protective",
                      device_class="problem", value_template=PROTECTIVE_TEMPLATE, payload_on="ON",
                      payload_off="OFF")
    pain = dict(common, name="Pain level", unique_id=f"{base_id}_pain",
                value_template=PAIN_TEMPLATE, icon="mdi:emoticon-sad-outline")
    if pain_labels:
        pain.update(device_class="enum", options=[str(x) for x in pain_labels])
    return [DiscoveryMessage(topics["protective"], protective if task in (None, "protective") else None),
            DiscoveryMessage(topics["pain"], pain if task in (None, "pain") else None)]


def removal_messages(gateway: str, wearer: str, prefix: str = DEFAULT_PREFIX) -> list[DiscoveryMessage]:
    """Empty retained payloads on the wearer's config topics: Home Assistant deletes its entities."""
    topics = config_topics(gateway, wearer, prefix)
    return [DiscoveryMessage(topics["protective"], None), DiscoveryMessage(topics["pain"], None)]


Announced = tuple[str, str, str]  # (prefix, gateway, wearer)


def sync_messages(gateway: str, wearers: Sequence[str], announced: Iterable[Announced], *, enabled: bool = True,
                  model_id: str | None = None, task: str | None = None, pain_labels: Sequence[str] | None = None,
                  prefix: str = DEFAULT_PREFIX) -> tuple[list[DiscoveryMessage], list[Announced]]:
    """What a gateway publishes at start: configs for its ``wearers`` (when ``enabled``) and removals
    for everything announced earlier (``announced``, from :func:`load_announced`) that is no longer
    served: a wearer taken out of the config, another prefix, or discovery switched off.

    Returns the messages and the new announced list (save it with :func:`save_announced`).
    """
    current = [(prefix, gateway, w) for w in wearers] if enabled else []
    msgs: list[DiscoveryMessage] = []
    for p, g, w in sorted(set(map(tuple, announced)) - set(current)):
        msgs += removal_messages(g, w, p)
    for p, g, w in current:
        msgs += discovery_messages(g, w, model_id=model_id, task=task, pain_labels=pain_labels, prefix=p)
    return msgs, current


def load_announced(path: str | os.PathLike[str]) -> list[Announced]:
    """The ``(prefix, gateway, wearer)`` entries announced by an earlier run ([] if none or unreadable)."""
    try:
        items = json.loads(Path(path).read_text())
        return [(str(p), str(g), str(w)) for p, g, w in items]
    except (OSError, ValueError, TypeError):
        return []


def save_announced(path: str | os.PathLike[str], announced: Iterable[Announced]) -> None:
    """Remember what is announced (atomic write), for the next run's removals."""
    from alanet.atomic import write_text  # noqa: PLC0415

    write_text(path, json.dumps([list(a) for a in announced]) + "\n")

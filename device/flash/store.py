"""The bundles a gateway keeps on disk, and the one verification every install runs.

Layout under ``<state_dir>/bundles/``::

    pointer.json          {"schema": "alanet.bundles/1", "current": NAME, "previous": NAME|null, "floor": N}
    <NAME>/               an installed bundle directory (model.tflite, manifest.json, signature)
    .staging/<ID>/        transfers and installs in progress (chunks, unpacked candidates)
    .lock                 serialises pointer changes between processes

``NAME`` is ``<model_id>-<first 12 hex of SHA-256 of manifest.json>``, so the same
bundle installs to the same slot. ``floor`` is the highest ``bundle_version`` ever made
current here: a flash below it is a downgrade and is refused (:func:`admission_problem`);
only a local install with ``allow_downgrade`` goes below it (and lowers it). A signed
rollback command may return to ``previous`` below the floor, which stays. The pointer file is replaced atomically (written
beside it, fsync'ed, renamed), so a power cut leaves either the old or the new
pointer. Only ``current`` and ``previous`` are kept; :meth:`BundleStore.prune` removes
the rest.

:func:`verify_bundle` is the single check used by ``alanet flash`` (MQTT and
``--to``) and at gateway start: :func:`~alanet.device.bundle.load_bundle` with the
trust policy (size, SHA-256, Ed25519 signature, JSON Schema, LiteRT self-test), then
:meth:`Fit.check` (channel layout, sample rate, window of the wearable).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from alanet.device.bundle import MANIFEST_FILE, MODEL_FILE, Bundle, BundleError, bundle_file_names, load_bundle, unpack
from alanet.device.schema import EMOPAIN
from alanet.errors import InputError

STORE_SCHEMA = "alanet.bundles/1"
POINTER_FILE = "pointer.json"
STAGING_DIR = ".staging"
STALE_STAGING_S = 24 * 3600.0
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class TrustPolicy:
    """Which bundles a gateway accepts: signed by one of ``trusted_keys``, or unsigned if allowed.

    With trusted keys, unsigned and foreign-signed bundles are refused whatever
    ``allow_unsigned`` says. Without keys, a bundle is accepted only when
    ``allow_unsigned`` is switched on explicitly (its signature, if any, cannot be checked).
    """

    trusted_keys: tuple[str, ...] = ()
    allow_unsigned: bool = False

    def load(self, path: str | os.PathLike[str], run_self_test: bool = True) -> Bundle:
        keys = list(self.trusted_keys)
        if not keys and not self.allow_unsigned:
            raise BundleError("signature: no trusted key is configured and unsigned bundles are not allowed "
                              "(configure trusted keys or allow unsigned bundles explicitly)")
        return load_bundle(path, trusted_keys=keys or None, allow_unsigned=self.allow_unsigned and not keys,
                           run_self_test=run_self_test)


@dataclass(frozen=True)
class Fit:
    """What the wearable feeds: the channel names in order, its sample rate, the longest window."""

    channels: tuple[str, ...] | None = tuple(EMOPAIN.names)
    sample_rate_hz: float | None = 60.0
    max_window_s: float = 60.0

    def problem(self, bundle: Bundle) -> str | None:
        """Why ``bundle`` does not fit the wearable, or None."""
        names = tuple(bundle.schema.names)
        if self.channels is not None and names != tuple(self.channels):
            diff = next((i for i, (a, b) in enumerate(zip(names, self.channels)) if a != b), min(len(names), len(self.channels)))
            got = names[diff] if diff < len(names) else "(none)"
            want = self.channels[diff] if diff < len(self.channels) else "(none)"
            count = (f"the model wants {len(names)} channels, the wearable gives {len(self.channels)}"
                     if len(names) != len(self.channels) else "the model's channel layout is not the wearable's")
            return f"channels: {count}; first difference at channel {diff}: model {got!r}, wearable {want!r}"
        fs = float(bundle.schema.sample_rate_hz)
        if self.sample_rate_hz is not None and abs(fs - self.sample_rate_hz) > 1e-3 * self.sample_rate_hz:
            return f"sample_rate_hz: the model wants {fs:g} Hz, the wearable samples at {self.sample_rate_hz:g} Hz"
        if bundle.window < 1 or not 1 <= bundle.stride <= bundle.window:
            return f"window: window {bundle.window} / stride {bundle.stride} is not usable"
        if bundle.window > self.max_window_s * fs:
            return f"window: {bundle.window} frames ({bundle.window / fs:g} s) is longer than {self.max_window_s:g} s"
        return None

    def check(self, bundle: Bundle) -> None:
        p = self.problem(bundle)
        if p is not None:
            raise BundleError(f"{MANIFEST_FILE}: {p}")


def verify_bundle(path: str | os.PathLike[str], policy: TrustPolicy, fit: Fit | None = None) -> Bundle:
    """Load ``path`` under ``policy`` (self-test included) and check it fits; BundleError says why not."""
    b = policy.load(path, run_self_test=True)
    if fit is not None:
        fit.check(b)
    return b


def slot_name(bundle_dir: Path) -> str:
    """``<model_id>-<sha12 of manifest.json>`` (file-system safe)."""
    raw = (bundle_dir / MANIFEST_FILE).read_bytes()
    try:
        mid = str(json.loads(raw).get("model_id", "bundle"))
    except (ValueError, AttributeError):
        mid = "bundle"
    mid = _NAME_RE.sub("-", mid).strip("-.")[:48] or "bundle"
    return f"{mid}-{hashlib.sha256(raw).hexdigest()[:12]}"


def _same_file(a: Path, b: Path) -> bool:
    if not a.exists() or not b.exists():
        return a.exists() == b.exists()
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def admission_problem(bundle: Bundle, *, gateway: str | None, floor: int) -> str | None:
    """Why this gateway must not switch to a verified ``bundle``, or None.

    ``gateways`` in the (signed) manifest, when not empty, must name ``gateway``; the
    (signed) ``bundle_version`` must not be below ``floor``, the newest this gateway has
    run, so an older signed bundle cannot be replayed to it.
    """
    targets = bundle.gateways
    if gateway is not None and targets and gateway not in targets:
        shown = ", ".join(targets[:5]) + (f" and {len(targets) - 5} more" if len(targets) > 5 else "")
        return f"gateways: the bundle is for {shown}, not for {gateway!r}"
    if bundle.version < floor:
        return (f"bundle_version: {bundle.version} is below {floor}, the newest this gateway has run (a downgrade "
                "is refused; force it locally with alanet flash --to STATE_DIR --allow-downgrade)")
    return None


@dataclass(frozen=True)
class StoreState:
    current: str | None = None
    previous: str | None = None
    floor: int = 0  # highest bundle_version made current here


class BundleStore:
    """Installed bundles of one gateway (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "bundles"
        self.staging = self.root / STAGING_DIR

    # ---- pointer ----
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock over pointer changes (across processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def state(self) -> StoreState:
        p = self.root / POINTER_FILE
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return StoreState()
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: unreadable bundle pointer ({exc})") from None
        if not isinstance(d, dict) or d.get("schema") != STORE_SCHEMA:
            raise InputError(f"{p}: not a {STORE_SCHEMA} pointer file")
        floor = d.get("floor", 0)
        return StoreState(d.get("current"), d.get("previous"),
                          floor if isinstance(floor, int) and not isinstance(floor, bool) else 0)

    def _write_state(self, st: StoreState) -> None:
        from alanet.atomic import write_text

        doc = {"schema": STORE_SCHEMA, "current": st.current, "previous": st.previous, "floor": st.floor,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text(self.root / POINTER_FILE, json.dumps(doc, indent=2) + "\n")

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise InputError(f"{self.root / POINTER_FILE}: bad bundle name {name!r}")
        return self.root / name

    def current_path(self) -> Path | None:
        """The current bundle's directory, or None when the store is empty."""
        st = self.state()
        return self.path(st.current) if st.current else None

    def previous_path(self) -> Path | None:
        st = self.state()
        return self.path(st.previous) if st.previous else None

    # ---- staging and installing ----
    def new_staging(self, key: str | None = None) -> Path:
        """A staging directory (``key`` makes it stable, for resumable transfers)."""
        d = self.staging / (key or f"install-{uuid.uuid4().hex[:12]}")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def stage(self, src: str | os.PathLike[str]) -> Path:
        """Copy a bundle directory or unpack an archive into a fresh staging dir; returns the bundle dir."""
        src = Path(src)
        dest = self.new_staging() / "bundle"
        if src.is_dir():
            dest.mkdir()
            for name in bundle_file_names(src):
                shutil.copyfile(src / name, dest / name)
            if not (dest / MANIFEST_FILE).is_file() or not (dest / MODEL_FILE).is_file():
                raise BundleError(f"{src}: not a bundle directory (needs {MANIFEST_FILE} and {MODEL_FILE})")
        elif src.is_file():
            unpack(src, dest)
        else:
            raise BundleError(f"{src}: no such bundle")
        return dest

    def commit(self, staged: Path, bundle: Bundle | None = None) -> tuple[str, Bundle | None]:
        """Move a verified staged bundle dir into its slot; returns (name, bundle re-pointed at the slot)."""
        name = slot_name(staged)
        final = self.path(name)
        if final.exists() and all(_same_file(staged / f, final / f)
                                  for f in {*bundle_file_names(staged), *bundle_file_names(final)}):
            shutil.rmtree(staged, ignore_errors=True)
        else:
            if final.exists():  # same manifest, damaged files: replace the slot with the verified copy
                old = final.with_name(f".{name}.old-{uuid.uuid4().hex[:6]}")
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            for p in staged.iterdir():
                os.chmod(p, 0o644)
            os.replace(staged, final)
        if bundle is not None:
            bundle = replace(bundle, path=final, model_path=final / MODEL_FILE)
        return name, bundle

    def slot_version(self, name: str) -> int:
        """The ``bundle_version`` of installed bundle ``name`` (0 when unreadable or absent)."""
        try:
            v = json.loads((self.path(name) / MANIFEST_FILE).read_text(encoding="utf-8")).get("bundle_version", 0)
        except (OSError, ValueError, AttributeError):
            return 0
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def activate(self, name: str, floor: int | None = None) -> StoreState:
        """Make ``name`` current (the old current becomes previous); returns the state before.

        The floor rises to the bundle's version (``floor`` sets it instead: a forced downgrade).
        """
        if not self.path(name).is_dir():
            raise InputError(f"{self.root}: no installed bundle {name!r}")
        with self.locked():
            before = self.state()
            new_floor = max(before.floor, self.slot_version(name)) if floor is None else floor
            if before.current != name or new_floor != before.floor:
                prev = before.current if before.current != name else before.previous
                self._write_state(StoreState(name, prev, new_floor))
        return before

    def restore(self, st: StoreState) -> None:
        """Put the pointer back to ``st`` (after a refused activation)."""
        with self.locked():
            self._write_state(st)

    def rollback_target(self) -> str:
        st = self.state()
        if not st.previous or not self.path(st.previous).is_dir():
            raise InputError(f"{self.root}: no previous bundle to roll back to")
        return st.previous

    def rollback(self) -> StoreState:
        """Swap current and previous; returns the state before."""
        with self.locked():
            before = self.state()
            if not before.previous or not self.path(before.previous).is_dir():
                raise InputError(f"{self.root}: no previous bundle to roll back to")
            self._write_state(StoreState(before.previous, before.current, before.floor))
        return before

    def adopt(self, src: str | os.PathLike[str]) -> str | None:
        """If the store is empty, install ``src`` (the bundle the gateway runs now) as current."""
        if self.state().current:
            return None
        staged = self.stage(src)
        name, _ = self.commit(staged)
        with self.locked():
            st = self.state()
            if not st.current:
                self._write_state(StoreState(name, None, max(st.floor, self.slot_version(name))))
        return name

    def prune(self) -> None:
        """Remove bundles other than current/previous, and staging dirs older than a day."""
        st = self.state()
        keep = {st.current, st.previous}
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.is_dir() and not p.name.startswith(".") and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
        if self.staging.is_dir():
            now = time.time()
            for p in self.staging.iterdir():
                try:
                    if now - p.stat().st_mtime > STALE_STAGING_S:
                        shutil.rmtree(p, ignore_errors=True)
                except OSError:
                    pass

    def install(self, src: str | os.PathLike[str], policy: TrustPolicy, fit: Fit | None = None,
                running: str | os.PathLike[str] | None = None,
                allow_downgrade: bool = False) -> tuple[Bundle, StoreState]:
        """Stage, verify and activate ``src`` (the ``--to PATH`` install); returns (bundle, state before).

        ``running``: the bundle in use when the store is empty, kept as ``previous``.
        A bundle older than the store's floor is refused unless ``allow_downgrade`` (the
        operator forcing it locally; the floor then drops to its version).
        Nothing changes unless every check passes.
        """
        staged = self.stage(src)
        try:
            bundle = verify_bundle(staged, policy, fit)
            problem = admission_problem(bundle, gateway=None, floor=self.state().floor)
            if problem is not None and not allow_downgrade:
                raise BundleError(f"{MANIFEST_FILE}: {problem}")
        except BaseException:
            shutil.rmtree(staged.parent, ignore_errors=True)
            raise
        if running is not None:
            self.adopt(running)
        name, bundle = self.commit(staged, bundle)
        shutil.rmtree(staged.parent, ignore_errors=True)
        assert bundle is not None
        before = self.activate(name, floor=bundle.version if allow_downgrade else None)
        self.prune()
        return bundle, before

    def load(self, name: str, policy: TrustPolicy, fit: Fit | None = None) -> Bundle:
        """Verify an installed bundle (as at gateway start or before a rollback)."""
        return verify_bundle(self.path(name), policy, fit)


def load_startup_bundle(store: BundleStore, fallback: str | os.PathLike[str] | None, policy: TrustPolicy,
                        fit: Fit | None = None, log=None) -> Bundle:
    """The bundle a gateway starts with: the store's current, else its previous, else ``fallback``.

    Each candidate gets the full verification; one that fails is logged and skipped.
    BundleError (with every reason) when none passes.
    """
    reasons: list[str] = []
    st = store.state()
    cands: list[tuple[str, Path]] = []
    if st.current:
        cands.append(("current", store.path(st.current)))
    if st.previous:
        cands.append(("previous", store.path(st.previous)))
    if fallback is not None:
        cands.append(("configured", Path(fallback)))
    for what, path in cands:
        try:
            return verify_bundle(path, policy, fit)
        except InputError as exc:
            reasons.append(f"{what} bundle {path}: {exc}")
            if log is not None:
                log.error("%s bundle %s refused: %s", what, path, exc)
    if not cands:
        raise BundleError(f"{store.root}: no bundle installed and none configured")
    raise BundleError("; ".join(reasons))


__all__: Sequence[str] = ["BundleStore", "StoreState", "TrustPolicy", "Fit", "verify_bundle", "load_startup_bundle",
                          "slot_name", "admission_problem"]

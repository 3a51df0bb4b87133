"""Model bundles: what a gateway runs (no TensorFlow: LiteRT, cryptography, jsonschema).

A bundle is a directory holding ``model.tflite``, ``manifest.json`` and, when
signed, ``signature``; a bundle that runs extra native batch sizes also holds one
``model-b<N>.tflite`` per size (listed with their SHA-256 and size in the
manifest's ``batch_models``, so the signature over the manifest covers them); ``pack``/``unpack`` turn it into one tar file for transport.
The manifest (schema ``alanet.bundle/1``; ``alanet.bundle/2`` when the normalisation is
per wearer, so that older gateways refuse it; JSON Schema in
``alanet/device/schemas/manifest.schema.json``) is the whole contract: task,
labels, channels with units, sample rate, window/stride, normalisation,
decision thresholds, quantisation, training and parity summary, the model's
SHA-256 and size (and those of its batch models), and self-test vectors.

:func:`load_bundle` refuses a bundle whose manifest breaks the schema, whose
model hash or size (or a batch model's) differs, whose signature is not from a trusted key, or whose
self-test vectors do not reproduce, with a :class:`BundleError` naming why.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from alanet.device import signing
from alanet.device.features import Normalizer
from alanet.device.schema import Schema
from alanet.device.signing import KeySource, generate_keypair, sign_manifest  # noqa: F401  (re-exported)
from alanet.errors import InputError

MANIFEST_SCHEMA = "alanet.bundle/1"
# A bundle whose normalisation is per wearer: a gateway that predates it must refuse the
# bundle (it would normalise with the population statistics and never notice).
MANIFEST_SCHEMA_PER_WEARER = "alanet.bundle/2"
MANIFEST_SCHEMAS = (MANIFEST_SCHEMA, MANIFEST_SCHEMA_PER_WEARER)
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
SIGNATURE_FILE = "signature"
BUNDLE_FILES = (MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE)
BATCH_MODEL_RE = re.compile(r"^model-b([1-9][0-9]{0,3})\.tflite$")  # model-b16.tflite: the model at batch 16
MAX_BATCH_MODELS = 8
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
XZ_MAGIC = b"\xfd7zXZ\x00"
# lc/lp/pb for a model's 4-byte-aligned tables: the demo bundles pack to ~57 KiB against ~59-60 KiB with xz's defaults
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 4 << 20,
               "lc": 0, "lp": 2, "pb": 3}]
XZ_MEMLIMIT = 16 << 20  # decoder memory an archive may ask for (a 4 MiB window needs ~5 MiB)
MAX_UNPACKED = 64 << 20  # bytes an xz archive may unpack to (the flash transfer's limit on an archive)
MAX_TAR_HEADER = 64 << 10  # bytes of a PAX or GNU long-name header, which tarfile reads whole into memory
SCHEMA_PATH = Path(__file__).with_name("schemas") / "manifest.schema.json"


class BundleError(InputError):
    """A bundle that must not be run; the message says which file/field and why."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict
    schema: Schema
    normalizer: Normalizer
    model_path: Path
    signed_by: str | None = None  # key id of the trusted key that signed it, if verified
    signature_present: bool = False
    self_test_max_diff: float | None = None  # None when the self-test was not run

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def window(self) -> int:
        return int(self.manifest["window"])

    @property
    def stride(self) -> int:
        return int(self.manifest["stride"])

    @property
    def model_id(self) -> str:
        return str(self.manifest["model_id"])

    @property
    def quantization(self) -> str:
        return str(self.manifest["quantization"])

    @property
    def decision(self) -> dict:
        return dict(self.manifest["decision"])

    @property
    def stateful(self) -> bool:
        return bool(self.manifest["stateful"])

    @property
    def version(self) -> int:
        """The signed, monotonic ``bundle_version`` (0 when the manifest has none)."""
        return int(self.manifest.get("bundle_version", 0))

    @property
    def batch_models(self) -> dict[int, Path]:
        """Extra native batch sizes → their model file (in this bundle's directory)."""
        return {int(e["size"]): self.path / e["file"] for e in self.manifest.get("batch_models") or []}

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes this bundle runs natively (always with 1)."""
        return tuple(sorted({1, *self.batch_models}))

    @property
    def gateways(self) -> list[str]:
        """Gateway ids this bundle is meant for (empty: any gateway)."""
        return list(self.manifest.get("gateways") or [])


def default_decision(task: str, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Default decision parameters recorded in the manifest (the gateway reads them there).

    ``protective``: hysteresis on the smoothed probability of class 1.
    ``pain``: a level change is reported when it holds for ``min_change_windows`` of the
    last ``horizon_windows`` windows. Any other (label) task: hysteresis like
    ``protective`` on the last class, named in ``class_name``.
    """
    hysteresis = {"class_index": 1, "smoothing_alpha": 0.5, "raise_threshold": 0.6, "clear_threshold": 0.4,
                  "min_raise_windows": 2, "min_clear_windows": 2}
    if task == "protective":
        return hysteresis
    if task == "pain":
        return {"horizon_windows": 8, "min_change_windows": 4}
    idx = max(1, len(labels) - 1) if labels else 1
    name = labels[idx] if labels and idx < len(labels) else str(idx)
    return {**hysteresis, "class_index": idx, "class_name": name}


# --------------------------------------------------------------------------- manifest


@lru_cache(maxsize=1)
def manifest_json_schema() -> dict:
    """The JSON Schema of ``manifest.json``."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def first_schema_error(instance: Any, schema: Mapping[str, Any]) -> Any:
    """The first (shallowest) way ``instance`` breaks ``schema``, or None. Where no branch of a
    ``oneOf`` fits, the error inside the branch that fits best (fewest errors): the field a
    user got wrong, not "valid under none of the schemas"."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance),
                    key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return None
    err = errors[0]
    while err.validator == "oneOf" and err.context:
        branches: dict[Any, list] = {}
        for c in err.context:
            branches.setdefault(c.relative_schema_path[0], []).append(c)
        err = min(branches.values(), key=len)[0]
    return err


def validate_manifest(manifest: Mapping[str, Any], where: str = MANIFEST_FILE) -> None:
    """BundleError naming the first offending field if ``manifest`` breaks the schema or is inconsistent."""
    try:
        import jsonschema  # noqa: F401 - checked here for a clear message
    except ImportError:  # pragma: no cover - the device extra installs it
        raise BundleError("the 'jsonschema' package is needed to check bundles") from None
    err = first_schema_error(manifest, manifest_json_schema())
    if err is not None:
        path = [str(p) for p in err.absolute_path]
        if err.validator == "required" and isinstance(err.instance, dict):
            missing = [k for k in err.validator_value if k not in err.instance]
            raise BundleError(f"{where}: field {'/'.join(path + missing[:1])}: missing")
        field = "/".join(path) or "(top level)"
        msg = err.message if len(err.message) <= 200 else err.message[:200] + "..."
        raise BundleError(f"{where}: field {field}: {msg}")
    # Consistency the schema language cannot express.
    n_ch = len(manifest["channels"])
    k = len(manifest["labels"])
    norm = manifest["normalization"]
    if len(norm["mean"]) != n_ch or len(norm["std"]) != n_ch:
        raise BundleError(f"{where}: field normalization: {len(norm['mean'])} means / {len(norm['std'])} stds for {n_ch} channels")
    if list(manifest["input"]["shape"]) != [1, manifest["window"], n_ch]:
        raise BundleError(f"{where}: field input/shape: {manifest['input']['shape']} is not [1, window={manifest['window']}, channels={n_ch}]")
    if manifest["stride"] > manifest["window"]:
        raise BundleError(f"{where}: field stride: {manifest['stride']} > window {manifest['window']}")
    sizes: set[int] = set()
    for i, e in enumerate(manifest.get("batch_models") or []):
        size, name = e["size"], e["file"]
        mt = BATCH_MODEL_RE.match(name)
        if name != MODEL_FILE and (mt is None or int(mt.group(1)) != size):
            raise BundleError(f"{where}: field batch_models/{i}/file: {name!r} is not model-b{size}.tflite "
                              f"(or {MODEL_FILE}, for a model with a dynamic batch)")
        if size in sizes:
            raise BundleError(f"{where}: field batch_models/{i}/size: batch {size} listed twice")
        if name == MODEL_FILE and (e["sha256"] != manifest["model_sha256"] or e["bytes"] != manifest["model_bytes"]):
            raise BundleError(f"{where}: field batch_models/{i}: names {MODEL_FILE} with another hash or size")
        sizes.add(size)
    ci = manifest["decision"].get("class_index")
    if ci is not None and ci >= k:
        raise BundleError(f"{where}: field decision/class_index: {ci} but only {k} labels")
    cw = manifest["decision"].get("class_weights")
    if cw is not None and len(cw) != k:
        raise BundleError(f"{where}: field decision/class_weights: {len(cw)} weights for {k} labels")
    from alanet.device.decisions import make_decider

    try:  # the gateway builds exactly this decider: settings it would refuse are refused here
        make_decider(manifest["task"], manifest["decision"], manifest["labels"])
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{where}: field decision: {exc}") from None
    for i, st in enumerate(manifest["self_test"]):
        if len(st["output"]) != k:
            raise BundleError(f"{where}: field self_test/{i}/output: {len(st['output'])} values for {k} labels")
    att = manifest.get("attention")
    if att:
        if att["temporal"]["length"] != manifest["window"]:
            raise BundleError(f"{where}: field attention/temporal/length: {att['temporal']['length']} is not the "
                              f"window {manifest['window']}")
        n_body = len(att["body"]["names"]) if att["body"]["axis"] == "parts" else att["body"]["count"]
        for i, st in enumerate(manifest["self_test"]):
            a = st.get("attention")
            if a is not None and (len(a["temporal"]) != manifest["window"] or len(a["body"]) != n_body):
                raise BundleError(f"{where}: field self_test/{i}/attention: {len(a['temporal'])} temporal / "
                                  f"{len(a['body'])} bodily weights, expected {manifest['window']} / {n_body}")


def manifest_to_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The exact bytes written as manifest.json (and signed)."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def encode_window(window: np.ndarray) -> str:
    """A normalised window [L, C] as base64 of float32 little-endian values (row-major)."""
    return base64.b64encode(np.ascontiguousarray(window, dtype="<f4").tobytes()).decode("ascii")


def decode_window(b64: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_window`; ValueError if the size does not match ``shape``."""
    raw = base64.b64decode(b64, validate=True)
    n = int(np.prod(shape))
    if len(raw) != 4 * n:
        raise ValueError(f"{len(raw)} bytes, expected {4 * n} for a {shape[0]}x{shape[1]} float32 window")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def quantize_window(window: np.ndarray) -> dict[str, Any]:
    """A window [L, C] at 8 bits per value, as a self-test input: ``{"b64", "offset", "scale"}``.

    Per channel an offset and a scale (float32); the codes are stored channel by channel,
    each channel's first code then its differences from one frame to the next (mod 256),
    which for body movement are small and compress well. A quarter of
    :func:`encode_window`'s bytes before compression: what keeps a bundle's transfer
    form small. The self-test's expected outputs are the model's on
    :func:`dequantize_window` of this, so nothing is lost.
    """
    x = np.asarray(window, dtype=np.float32)
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((x - lo) / scale), 0, 255).astype(np.uint8).T  # [C, L]
    deltas = np.diff(codes, axis=1, prepend=np.zeros((codes.shape[0], 1), np.uint8))  # uint8: mod 256
    return {"b64": base64.b64encode(deltas.tobytes()).decode("ascii"),  # shortest float32 decimals:
            "offset": [float(str(v)) for v in lo], "scale": [float(str(v)) for v in scale]}  # exact, short


def dequantize_window(q: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`quantize_window` (offset + scale × code, float32: the same values
    on every machine); ValueError if a size does not match ``shape``."""
    raw = base64.b64decode(q["b64"], validate=True)
    n = int(np.prod(shape))
    if len(raw) != n:
        raise ValueError(f"{len(raw)} bytes, expected {n} for a {shape[0]}x{shape[1]} 8-bit window")
    offset, scale = np.asarray(q["offset"], np.float32), np.asarray(q["scale"], np.float32)
    if offset.shape != (shape[1],) or scale.shape != (shape[1],):
        raise ValueError(f"{offset.size} offsets / {scale.size} scales for {shape[1]} channels")
    deltas = np.frombuffer(raw, dtype=np.uint8).reshape(shape[1], shape[0])
    codes = np.cumsum(deltas, axis=1, dtype=np.uint8).T  # the sums wrap mod 256, as the differences did
    return offset + scale * codes.astype(np.float32)


def self_test_input(vector: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The input window of one self-test vector: ``input_q8`` (8-bit) or ``input_b64`` (float32)."""
    if "input_q8" in vector:
        return dequantize_window(vector["input_q8"], shape)
    return decode_window(vector["input_b64"], shape)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def write_bundle(
    dir: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    tflite_bytes: bytes,
    *,
    signing_key: KeySource | None = None,
    force: bool = False,
    batch_models: Mapping[int, bytes | None] | None = None,
) -> Path:
    """Write a bundle directory atomically (staged sibling, renamed on success).

    ``model_file``, ``model_sha256`` and ``model_bytes`` are filled in from
    ``tflite_bytes``; ``batch_models`` (extra native batch size → that model's bytes,
    or ``None`` when ``tflite_bytes`` has a dynamic batch and runs that size itself)
    become ``model-b<N>.tflite`` files and the manifest's ``batch_models`` entries; the
    manifest is validated before anything is written; with ``signing_key`` (a PEM
    private key path or bytes) a ``signature`` is added.
    """
    from alanet.atomic import staged_dir

    final = Path(dir)
    if final.exists() and not force:
        raise BundleError(f"{final}: already exists (use --force to replace it)")
    m = dict(manifest)
    m["model_file"] = MODEL_FILE
    m["model_sha256"] = hashlib.sha256(tflite_bytes).hexdigest()
    m["model_bytes"] = len(tflite_bytes)
    files = {MODEL_FILE: tflite_bytes}
    if batch_models:
        entries = []
        for size, data in sorted(batch_models.items()):
            name = MODEL_FILE if data is None else f"model-b{int(size)}.tflite"
            data = tflite_bytes if data is None else data
            files[name] = data
            entries.append({"size": int(size), "file": name, "sha256": hashlib.sha256(data).hexdigest(),
                            "bytes": len(data)})
        m["batch_models"] = entries
    else:
        m.pop("batch_models", None)
    validate_manifest(m, where=f"{final}/{MANIFEST_FILE}")
    mbytes = manifest_to_bytes(m)
    sig = sign_manifest(mbytes, signing_key) if signing_key is not None else None
    with staged_dir(final, force=force) as stage:
        for name, data in files.items():
            (stage / name).write_bytes(data)
        (stage / MANIFEST_FILE).write_bytes(mbytes)
        if sig is not None:
            (stage / SIGNATURE_FILE).write_bytes(sig)
        for p in stage.iterdir():
            os.chmod(p, 0o644)
        os.chmod(stage, 0o755)
    return final


def pack(dir: str | os.PathLike[str], archive: str | os.PathLike[str] | None = None, *, compress: bool = True) -> Path:
    """Pack a bundle directory into one xz-compressed tar file (default ``<dir>.tar.xz``): the
    form ``alanet flash`` sends; returns its path.

    Members are the bundle files (:func:`bundle_file_names`) at the top level, with fixed
    owner/mode/mtime so the same bundle always packs to the same bytes. xz at its
    strongest setting with a 4 MiB window (what unpacking needs in memory): an
    unrolled model's thousands of near-identical operators shrink ~5×. ``compress=False``:
    a plain tar, for gateways that predate xz archives.
    """
    from alanet.atomic import write_bytes

    src = Path(dir)
    if not (src / MANIFEST_FILE).is_file() or not (src / MODEL_FILE).is_file():
        raise BundleError(f"{src}: not a bundle directory (needs {MANIFEST_FILE} and {MODEL_FILE})")
    out = Path(archive) if archive is not None else src.with_name(src.name + ".tar.xz")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in bundle_file_names(src):
            p = src / name
            data = p.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    write_bytes(out, lzma.compress(data, format=lzma.FORMAT_XZ, filters=XZ_FILTERS) if compress else data)
    return out


def transfer_size(dir: str | os.PathLike[str]) -> int:
    """Bytes of the archive :func:`pack` makes of bundle directory ``dir``: what ``alanet flash`` sends."""
    with tempfile.TemporaryDirectory(prefix="alanet-pack-") as tmp:
        return pack(dir, Path(tmp) / "bundle.tar.xz").stat().st_size


def is_bundle_file(name: str) -> bool:
    """Whether ``name`` may be a file of a bundle (manifest, model, signature, batch models)."""
    return name in BUNDLE_FILES or BATCH_MODEL_RE.match(name) is not None


def bundle_file_names(dir: str | os.PathLike[str]) -> list[str]:
    """The bundle files present in directory ``dir``, in a fixed order (manifest, model,
    signature, then the batch models by size); other files are not part of the bundle."""
    d = Path(dir)
    extra = sorted((p.name for p in d.iterdir() if BATCH_MODEL_RE.match(p.name) and p.is_file()),
                   key=lambda n: int(BATCH_MODEL_RE.match(n).group(1)))  # type: ignore[union-attr]
    return [n for n in BUNDLE_FILES if (d / n).is_file()] + extra[:MAX_BATCH_MODELS]


class _BoundedXZ(io.RawIOBase):
    """The decompressed bytes of an xz file, read in pieces; BundleError past ``limit`` bytes."""

    def __init__(self, path: Path, limit: int) -> None:
        self._f = open(path, "rb")
        self._d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)
        self._buf = b""
        self._left = self._limit = limit
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._d.eof:
            chunk = self._f.read(1 << 16) if self._d.needs_input else b""
            if self._d.needs_input and not chunk:
                raise BundleError(f"{self._path}: damaged archive (the xz stream ends early)")
            self._buf = self._d.decompress(chunk, max_length=1 << 16)
        n = min(len(b), len(self._buf))
        self._left -= n
        if self._left < 0:
            raise BundleError(f"{self._path}: archive unpacks to more than {self._limit >> 20} MiB")
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


class _BoundedTarInfo(tarfile.TarInfo):
    """Tar headers as a bundle may have them: an extended (PAX) or long-name header is read
    whole into memory by tarfile, so one larger than ``MAX_TAR_HEADER`` stops the reading
    (compressed, a few KiB could otherwise ask for hundreds of MiB); sparse files are refused."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.SubsequentHeaderError(f"member {self.name[:80]!r} is a sparse file")
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                    tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > MAX_TAR_HEADER:
            raise tarfile.SubsequentHeaderError(f"an extended header of {self.size} bytes (at most {MAX_TAR_HEADER})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def unpack(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Unpack a bundle archive (a tar, plain or xz-compressed) into the new directory ``dest``; returns ``dest``.

    Only the bundle's own regular files at the top level are accepted. Members are read
    one at a time and the first one that is not allowed (a path with directories,
    ``..``, a link, a device, a duplicate, more than ``MAX_BATCH_MODELS`` batch models)
    stops the unpacking, so a hostile archive costs at most its own size in reading (an
    xz one: what it unpacks to), never a scan of thousands of headers; a PAX or long-name
    header over ``MAX_TAR_HEADER`` stops it too. An xz archive is decompressed as it is read,
    at most ``MAX_UNPACKED`` bytes with at most ``XZ_MEMLIMIT`` of decoder memory: a
    decompression bomb stops there. Other compressions (gzip, bzip2) are refused.
    """
    from alanet.atomic import staged_dir

    src = Path(archive)
    if Path(dest).exists():
        raise BundleError(f"{dest}: already exists")
    with contextlib.ExitStack() as stack:
        try:
            with open(src, "rb") as f:
                xz = f.read(len(XZ_MAGIC)) == XZ_MAGIC
            tar = (tarfile.open(fileobj=stack.enter_context(_BoundedXZ(src, MAX_UNPACKED)), mode="r|",
                                tarinfo=_BoundedTarInfo) if xz
                   else tarfile.open(src, mode="r:", tarinfo=_BoundedTarInfo))
        except (OSError, tarfile.TarError, lzma.LZMAError) as exc:
            raise BundleError(f"{src}: not a bundle archive (a tar file, plain or xz; {exc})") from None
        stack.enter_context(tar)
        stage = stack.enter_context(staged_dir(dest))
        seen: set[str] = set()
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, OSError, ValueError, lzma.LZMAError) as exc:
                raise BundleError(f"{src}: damaged archive ({exc})") from None
            if member is None:
                break
            name = member.name[2:] if member.name.startswith("./") else member.name
            if not is_bundle_file(name) or not member.isfile():
                raise BundleError(f"{src}: archive member {member.name[:80]!r} is not allowed in a bundle")
            if name in seen:
                raise BundleError(f"{src}: archive member {name!r} appears twice")
            if name not in BUNDLE_FILES and sum(n not in BUNDLE_FILES for n in seen) >= MAX_BATCH_MODELS:
                raise BundleError(f"{src}: archive has more than {MAX_BATCH_MODELS} batch models")
            if member.size > 64 << 20:
                raise BundleError(f"{src}: archive member {name!r} is too large ({member.size} bytes)")
            seen.add(name)
            f = tar.extractfile(member)
            assert f is not None
            try:
                with open(stage / name, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
            except (tarfile.TarError, lzma.LZMAError) as exc:
                raise BundleError(f"{src}: damaged archive ({exc})") from None
        for needed in (MANIFEST_FILE, MODEL_FILE):
            if needed not in seen:
                raise BundleError(f"{src}: archive has no {needed}")
    return Path(dest)


_TEMP_DIRS: list[str] = []


def _cleanup_temp_dirs() -> None:
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_temp_dirs)


# --------------------------------------------------------------------------- loading


def read_manifest(path: Path) -> tuple[dict, bytes]:
    """(manifest dict, exact bytes) of ``path/manifest.json``; BundleError if unreadable."""
    mpath = path / MANIFEST_FILE
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing (not a bundle)") from None
    except OSError as exc:
        raise BundleError(f"{mpath}: cannot read: {exc.strerror}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{MANIFEST_FILE}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_FILE}: not a JSON object")
    return manifest, raw


def load_bundle(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Iterable[KeySource] | None = None,
    allow_unsigned: bool = True,
    run_self_test: bool = True,
) -> Bundle:
    """Load and verify a bundle directory or archive.

    Checks, in order: the signature over the exact manifest bytes (when
    ``trusted_keys`` is given, a signature is required), the manifest against the
    JSON Schema, the model file's size and SHA-256, and (``run_self_test``) the
    self-test vectors run through LiteRT. Any failure raises :class:`BundleError`.
    ``allow_unsigned=False`` refuses a bundle without a signature.
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle")
    if p.is_file():
        tmp = tempfile.mkdtemp(prefix="alanet-bundle-")
        _TEMP_DIRS.append(tmp)
        p = unpack(p, Path(tmp) / "bundle")
    manifest, raw = read_manifest(p)

    keys = list(trusted_keys) if trusted_keys is not None else []
    sig_path = p / SIGNATURE_FILE
    signed_by = None
    if sig_path.is_file():
        if keys:
            signed_by = signing.verify_manifest(raw, sig_path.read_bytes(), keys)
        else:
            signing.parse_signature(sig_path.read_bytes())  # well-formed at least
            if not allow_unsigned:
                raise BundleError("signature: present but no trusted key was given to verify it")
    elif keys:
        raise BundleError("signature: bundle is unsigned but trusted keys were given")
    elif not allow_unsigned:
        raise BundleError("signature: bundle is unsigned")

    validate_manifest(manifest)
    if manifest["schema"] not in MANIFEST_SCHEMAS:  # pragma: no cover - the schema's enum covers it
        raise BundleError(f"{MANIFEST_FILE}: schema {manifest['schema']!r} is not one of {', '.join(MANIFEST_SCHEMAS)}")

    model_path = p / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"{MODEL_FILE}: missing")
    size = model_path.stat().st_size
    if size != manifest["model_bytes"]:
        raise BundleError(f"{MODEL_FILE}: {size} bytes, manifest says {manifest['model_bytes']}")
    if sha256_file(model_path) != manifest["model_sha256"]:
        raise BundleError(f"{MODEL_FILE}: SHA-256 mismatch")
    for e in manifest.get("batch_models") or []:
        bp = p / e["file"]
        if not bp.is_file():
            raise BundleError(f"{e['file']}: missing (batch_models lists it for batch {e['size']})")
        if bp.stat().st_size != e["bytes"]:
            raise BundleError(f"{e['file']}: {bp.stat().st_size} bytes, manifest says {e['bytes']}")
        if sha256_file(bp) != e["sha256"]:
            raise BundleError(f"{e['file']}: SHA-256 mismatch")

    try:
        schema = Schema.from_dict({"channels": manifest["channels"], "sample_rate_hz": manifest["sample_rate_hz"],
                                   "name": manifest.get("schema_name", "custom")})
        normalizer = Normalizer.from_dict(manifest["normalization"], schema.n_channels)
    except ValueError as exc:
        raise BundleError(f"{MANIFEST_FILE}: {exc}") from None

    bundle = Bundle(p, manifest, schema, normalizer, model_path, signed_by=signed_by,
                    signature_present=sig_path.is_file())
    if run_self_test:
        diff = self_test(bundle)
        bundle = Bundle(p, manifest, schema, normalizer, model_path, signed_by=signed_by,
                        signature_present=sig_path.is_file(), self_test_max_diff=diff)
    return bundle


def self_test(bundle: Bundle) -> float:
    """Run the manifest's self-test vectors through every model file of the bundle (batch 1, and each
    native batch size with the vectors repeated to fill the batch); return the largest |Δ|, BundleError
    above the tolerance."""
    from alanet.device.inference import ModelRunner

    m = bundle.manifest
    try:
        runner = ModelRunner.from_bundle(bundle)
    except InputError as exc:
        raise BundleError(f"{MODEL_FILE}: {exc}") from None
    shape = (bundle.window, bundle.schema.n_channels)
    if runner.window_shape != shape:
        raise BundleError(f"{MODEL_FILE}: input is {list(runner.window_shape)}, manifest says {list(shape)}")
    if runner.n_outputs != len(bundle.labels):
        raise BundleError(f"{MODEL_FILE}: {runner.n_outputs} outputs, manifest has {len(bundle.labels)} labels")
    atol = float(m["self_test_atol"])
    worst = 0.0
    xs = []
    for i, st in enumerate(m["self_test"], start=1):
        try:
            xs.append(self_test_input(st, shape))
        except (ValueError, binascii.Error) as exc:
            field = "input_q8" if "input_q8" in st else "input_b64"
            raise BundleError(f"{MANIFEST_FILE}: self_test {i}: {field}: {exc}") from None

    def check(i: int, where: str, got: np.ndarray, att: tuple[np.ndarray, np.ndarray] | None) -> None:
        nonlocal worst
        st = m["self_test"][i - 1]
        d = float(np.max(np.abs(got - np.asarray(st["output"], dtype=np.float32))))
        if not d <= atol:
            raise BundleError(f"self-test {i}{where}: max |Δ| {d:.3g} > {atol:g}")
        worst = max(worst, d)
        if "attention" in st and att is not None:
            for what, have, want in (("temporal", att[0], st["attention"]["temporal"]),
                                     ("body", att[1], st["attention"]["body"])):
                want = np.asarray(want, dtype=np.float32)
                if have.shape != want.shape:
                    raise BundleError(f"self-test {i}{where}: {what} attention has {have.size} weights, "
                                      f"manifest {want.size}")
                d = float(np.max(np.abs(have - want)))
                if not d <= atol:
                    raise BundleError(f"self-test {i}{where}: {what} attention max |Δ| {d:.3g} > {atol:g}")

    for i, x in enumerate(xs, start=1):
        check(i, "", runner.predict(x), runner.attention())
    files = {int(e["size"]): e["file"] for e in m.get("batch_models") or []}
    for size in runner.batch_sizes[1:]:
        rows = [k % len(xs) for k in range(size)]
        try:
            probs = runner.predict_at(size, np.stack([xs[r] for r in rows]))
        except (InputError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{files.get(size, MODEL_FILE)}: batch {size}: {exc}") from None
        att = runner.attention_batch()
        for k, r in enumerate(rows[:len(xs)]):
            check(r + 1, f" ({files.get(size, MODEL_FILE)}, batch {size})", probs[k],
                  (att[0][k], att[1][k]) if att is not None else None)
    return worst

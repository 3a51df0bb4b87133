"""Shared pieces of the benchmarks: platform name, percentiles, result files, "how measured".

Every benchmark writes one JSON document (``write_result``) with a ``figures`` list:
each figure is ``{"key", "label", "value", "unit", "how"}`` so the runner can put it in
the Markdown table and compare it with the per-platform reference
(``bench/reference/<platform>.json``). ``better`` says which direction is an
improvement (``"lower"`` for times and sizes, ``"higher"`` for rates).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
REFERENCE = BENCH / "reference"


def platform_name() -> str:
    """``linux-x86_64``, ``linux-aarch64``, ... (what reference files are named after).

    ``ALANET_BENCH_PLATFORM`` overrides it (e.g. ``rpi4``, ``rpi5``, ``jetson-orin``)
    so boards of one architecture keep separate reference files.
    """
    name = os.environ.get("ALANET_BENCH_PLATFORM")
    if name:
        return name
    return f"{sys.platform.rstrip('0123456789')}-{platform.machine().lower()}"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform_name(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def pct(values: Iterable[float], q: float, ndigits: int = 3) -> float | None:
    """The ``q``-th percentile (linear interpolation), rounded; None for no values."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return None
    return round(float(np.percentile(v, q)), ndigits)


def summary_ms(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max / n of latencies in milliseconds."""
    return {"p50": pct(values_ms, 50), "p99": pct(values_ms, 99), "max": pct(values_ms, 100), "n": len(values_ms)}


@dataclass(frozen=True)
class Figure:
    """One number of the results table."""

    key: str  # stable id, used to compare with the reference
    label: str  # what a reader sees
    value: float | int | str | None
    unit: str
    how: str  # how it was measured, one sentence
    better: str = "lower"  # "lower", "higher" or "" (not comparable, e.g. a count that must be 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of process ``pid`` in MB; 0.0 when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pin_one_core() -> int | None:
    """Pin this process to one CPU (the lowest allowed); return it (None if unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def write_result(name: str, data: dict[str, Any], figures: Sequence[Figure], out: Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``out``): the data, the figures, the machine."""
    doc = {"benchmark": name, "machine": machine_info(), "figures": [f.as_dict() for f in figures], **data}
    path = out or (RESULTS / f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fmt(value: Any) -> str:
    """A number for a table: 3 significant digits, thousands separated."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 0.01:
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value)


def repo_python() -> str:
    """The interpreter to run sub-benchmarks with (this one)."""
    return sys.executable


def bench_env() -> dict[str, str]:
    """Environment for benchmark subprocesses: repo importable, TensorFlow quiet, no GPU."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env

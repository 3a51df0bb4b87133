"""Every model on real recordings nobody here wrote: public UEA multivariate sets.

The sets ship inside the ``aeon`` wheel on PyPI (BSD-3-Clause; the UEA archive's
own data, redistributed there): the wheel is downloaded once with ``pip download
--no-deps`` into a cache folder and the ``.ts`` files are read straight from the zip;
nothing is installed and nothing is vendored here. Each set is converted to the
toolkit's generic CSV format at run time, one file per case (participant = case), and
every model is trained with ``alanet train``'s defaults on the set's own train/test
split (hold-out with ``--test-participants`` = the test cases):

* ``basicmotions`` — wrist smartwatch accelerometer + gyroscope (6 channels, 10 Hz),
  4 activities, 40 train / 40 test cases of 100 frames;
* ``japanesevowels`` — 12 LPC cepstrum coefficients of an uttered vowel, 9 speakers,
  270 train / 370 test cases of 7–29 frames (zero-padded to 29, with a mask).

    python bench/real_data.py [--sets basicmotions,japanesevowels] [--models all] [--seeds 0]
                              [--out bench/results/real_data.json] [--keep DIR]
    python bench/real_data.py --merge A.json B.json [--out bench/results/real_data.json]

Prints one table (test accuracy, macro F1, training time per model and set) and saves
JSON to ``bench/results/real_data.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, Figure, write_result  # noqa: E402

WHEEL = "aeon==1.6.0"
CACHE = RESULTS / "tmp" / "wheels"


@dataclass(frozen=True)
class RealSet:
    """A UEA set inside the wheel and how it maps to the generic CSV format."""

    name: str
    member: str  # path prefix inside the wheel (without _TRAIN.ts / _TEST.ts)
    sample_rate_hz: float
    description: str


SETS = {
    "basicmotions": RealSet("basicmotions", "aeon/datasets/data/BasicMotions/BasicMotions", 10.0,
                            "UEA BasicMotions: smartwatch accelerometer + gyroscope, 4 activities"),
    "japanesevowels": RealSet("japanesevowels", "aeon/datasets/data/JapaneseVowels/JapaneseVowels", 100.0,
                              "UEA JapaneseVowels: 12 LPC cepstrum coefficients, 9 speakers"),
}


def fetch_wheel(cache: Path = CACHE) -> Path:
    """The aeon wheel from PyPI (downloaded once into ``cache``, not installed)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("aeon-*.whl"))
    if not found:
        print(f"real_data: downloading {WHEEL} (data only, not installed) ...", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            WHEEL, "-d", str(cache)], capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise SystemExit(f"real_data: cannot download {WHEEL}: {tail}")
        found = sorted(cache.glob("aeon-*.whl"))
    return found[-1]


def read_ts(text: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    """A ``.ts`` file (sktime/aeon format) → (cases [T, C], labels, class names).

    Data lines are ``dim0 values : dim1 values : ... : label``; cases may differ in length.
    """
    classes: list[str] = []
    cases: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                classes = parts[2:] if len(parts) > 2 and parts[1].lower() == "true" else []
            elif low.startswith("@data"):
                in_data = True
            continue
        *dims, label = line.split(":")
        try:
            series = [np.array([float(v) for v in d.split(",")], np.float64) for d in dims]
        except ValueError as exc:
            raise ValueError(f"line {line_no}: {exc}") from None
        if len({len(s) for s in series}) != 1:
            raise ValueError(f"line {line_no}: dimensions of unequal length")
        cases.append(np.stack(series, axis=1))
        labels.append(label.strip())
    if not classes:
        classes = sorted(set(labels))
    return cases, labels, classes


def write_csv_set(rs: RealSet, wheel: Path, out: Path) -> tuple[str, ...]:
    """Write ``out/`` as a generic CSV dataset; returns the test participants (cases)."""
    with zipfile.ZipFile(wheel) as z:
        tr = read_ts(z.read(rs.member + "_TRAIN.ts").decode())
        te = read_ts(z.read(rs.member + "_TEST.ts").decode())
    classes = tr[2]
    out.mkdir(parents=True, exist_ok=True)
    n_ch = tr[0][0].shape[1]
    header = ",".join([f"dim{c}" for c in range(n_ch)] + ["label"])
    tests = []
    for prefix, (cases, labels, _) in (("tr", tr), ("te", te)):
        for i, (x, lab) in enumerate(zip(cases, labels)):
            pid = f"{prefix}{i:04d}"
            rows = "\n".join(",".join(f"{v:.7g}" for v in row) + f",{lab}" for row in x)
            (out / f"{pid}_case.csv").write_text(header + "\n" + rows + "\n")
            if prefix == "te":
                tests.append(pid)
    (out / "dataset.json").write_text(json.dumps({"sample_rate_hz": rs.sample_rate_hz, "label_names": classes,
                                                  "description": rs.description}, indent=1) + "\n")
    return tuple(tests)


def longest_case(root: Path) -> int:
    from alanet.train.data.loading import load_dataset

    return max(r.n_frames for r in load_dataset(root, "csv").recordings)


def run_model(model: str, data: Path, tests: tuple[str, ...], window: int, seed: int, out: Path) -> dict:
    """``alanet train`` with defaults (hold-out on the set's test cases) in a fresh process."""
    cmd = [sys.executable, "-m", "alanet", "train", "--data", str(data), "--format", "csv", "--task", "label",
           "--model", model, "--eval", "holdout", "--window", str(window), "--stride", str(window),
           "--test-participants", ",".join(tests), "--seed", str(seed), "--quiet", "--force", "--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return {"model": model, "seed": seed, "error": tail, "wall_s": round(wall, 1)}
    m = json.loads((out / "metrics.json").read_text())
    return {"model": model, "seed": seed, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "train_seconds": round(m.get("train_seconds", 0.0), 1), "wall_s": round(wall, 1),
            "n_test": m.get("n_windows")}


def main(argv: list[str] | None = None) -> int:
    from alanet.train.models import ALL_MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    ap.add_argument("--models", default="all", help=f"comma-separated, from {', '.join(ALL_MODELS)} (default all)")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    ap.add_argument("--keep", type=Path, help="keep the converted sets and the run directories here")
    ap.add_argument("--out", type=Path, default=RESULTS / "real_data.json")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="train nothing: combine the rows of earlier result files (e.g. more seeds of some models) "
                         "into --out, with the table and the per-model means recomputed")
    args = ap.parse_args(argv)
    if args.merge:
        return merge_results(args.merge, args.out)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    models = list(ALL_MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [s for s in sets if s not in SETS] + [m for m in models if m not in ALL_MODELS]
    if bad:
        ap.error(f"unknown set/model: {', '.join(bad)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    wheel = fetch_wheel()
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    work = args.keep or Path(tempfile.mkdtemp(prefix="alanet-real-"))
    rows = []
    for s in sets:
        root = work / s / "data"
        tests = write_csv_set(SETS[s], wheel, root)
        window = longest_case(root)
        for model in models:
            for seed in seeds:
                print(f"real_data: {s} {model} seed {seed} ...", file=sys.stderr, flush=True)
                row = {"set": s, "window": window, **run_model(model, root, tests, window, seed,
                                                              work / s / f"run-{model}-{seed}")}
                print("  " + json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    path = save(rows, sets, models, {"wheel": wheel.name, "wheel_sha256": wheel_sha}, args.out)
    print(f"saved {path}", file=sys.stderr)
    return 0


def save(rows: list[dict], sets: list[str], models: list[str], extra: dict, out: Path) -> Path:
    """Print the table and write the result file: rows, table, one mean-accuracy figure per set and model."""
    table = summarise(rows, sets, models)
    print(table)
    figures = []
    for s in sets:
        for model in models:
            acc = [r["accuracy"] for r in rows if r["set"] == s and r["model"] == model and "accuracy" in r]
            figures.append(Figure(f"real.{s}.{model}.accuracy", f"{s}: {model} test accuracy",
                                  round(float(np.mean(acc)), 4) if acc else None, "",
                                  f"alanet train defaults, the set's own train/test split, mean of {len(acc)} seed(s)",
                                  "higher"))
    seeds = sorted({int(r["seed"]) for r in rows})
    return write_result("real_data", {**extra, "seeds": seeds, "rows": rows, "table": table}, figures, out)


def merge_results(paths: list[Path], out: Path) -> int:
    """``--merge``: the rows of several result files as one result (a row per set, model and seed; a later
    file's row replaces an earlier one's)."""
    rows: dict[tuple, dict] = {}
    extra: dict = {}
    for p in paths:
        try:
            doc = json.loads(p.read_text())
            found = doc["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"real_data: {p}: not a real_data result file ({exc})", file=sys.stderr)
            return 2
        if doc.get("wheel_sha256") and extra.get("wheel_sha256") not in (None, doc["wheel_sha256"]):
            print(f"real_data: {p}: made from another wheel ({doc.get('wheel')})", file=sys.stderr)
            return 2
        extra = {"wheel": doc.get("wheel"), "wheel_sha256": doc.get("wheel_sha256")}
        for r in found:
            rows[(r["set"], r["model"], r["seed"])] = r
    merged = list(rows.values())
    sets = [s for s in SETS if any(r["set"] == s for r in merged)]
    from alanet.train.models import ALL_MODELS

    models = [m for m in ALL_MODELS if any(r["model"] == m for r in merged)]
    path = save(merged, sets, models, extra, out)
    print(f"saved {path}", file=sys.stderr)
    return 0


def summarise(rows: list[dict], sets: list[str], models: list[str]) -> str:
    """Markdown: one row per model, accuracy and macro F1 (means over seeds) and training time per set."""
    head = "| model | " + " | ".join(f"{s} accuracy | {s} macro F1 | {s} train s" for s in sets) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(sets))]
    for model in models:
        cells = []
        for s in sets:
            rr = [r for r in rows if r["set"] == s and r["model"] == model]
            ok = [r for r in rr if "accuracy" in r]
            if not ok:
                cells += ["error" if rr else "–", "", ""]
                continue
            seeds = f" ({len(ok)} seeds)" if len(ok) > 1 else ""
            cells += [f"{np.mean([r['accuracy'] for r in ok]):.3f}{seeds}", f"{np.mean([r['macro_f1'] for r in ok]):.3f}",
                      f"{np.mean([r['train_seconds'] for r in ok]):.0f}"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Session reports: a session log → summary, CSV and a self-contained HTML page (no I/O but files).

``alanet report SESSION`` and the gateway (at every session stop) use the same code:
:func:`read_log` parses a session log (``alanet.device.sessions``), :func:`summarise`
computes the figures a physiotherapist files (protective time and episode count per
exercise, the pain-level estimate's distribution, data-quality notes),
:func:`render_csv` gives one row per window and :func:`render_html` one page with
inline SVG plots and CSS: no script, no font, no network, so it opens anywhere and
prints. Runs on a gateway: numpy-free, no matplotlib, no TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from alanet import atomic
from alanet.device.attention import describe
from alanet.device.sessions import EXERCISE_LABELS, exercise_label, utc_iso
from alanet.errors import InputError

SUMMARY_SCHEMA = "alanet.session-summary/1"
# One colour per exercise (EmoPain order), readable on white and in greyscale print.
EXERCISE_COLOURS = {
    "other": "#9e9e9e", "one_leg_stand": "#6a1b9a", "reach_forward": "#00838f", "bend": "#ef6c00",
    "sit_to_stand": "#2e7d32", "stand_to_sit": "#558b2f", "sitting_still": "#5d4037", "standing_still": "#455a64",
    "walking": "#1565c0", None: "#e0e0e0",
}
GAP_FACTOR = 4.0  # windows further apart than this many strides (wall clock) mark a gap in the timeline


@dataclass
class SessionData:
    """A parsed session log."""

    path: Path
    start: dict[str, Any]
    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    exercises: list[dict[str, Any]] = field(default_factory=list)
    quality: list[list[dict[str, Any]]] = field(default_factory=lambda: [[]])  # per gateway run
    resumes: list[float] = field(default_factory=list)
    models: list[tuple[float, str]] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    bad_lines: int = 0

    @property
    def task(self) -> str:
        return str(self.start.get("task") or "protective")

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.start.get("labels") or []]

    @property
    def stride_s(self) -> float:
        return float(self.start.get("stride_s") or 0.75)

    @property
    def t0(self) -> float:
        return float(self.start["t"])

    @property
    def t_end(self) -> float:
        if self.stop is not None:
            return float(self.stop["t"])
        ts = [w["t"] for w in self.windows[-1:]] + [a["t"] for a in self.alerts[-1:]]
        return max([self.t0] + ts)


def read_log(path: str | Path) -> SessionData:
    """Parse a session log; lines that do not parse (a line cut by a power loss) are counted and skipped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such session log") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    data: SessionData | None = None
    bad = 0
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            kind = rec["k"]
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        if data is None:
            if kind != "start" or "session" not in rec or "t" not in rec:
                raise InputError(f"{path}: line {n}: not a session log (the first record must be a start)")
            data = SessionData(path, rec)
            data.models.append((rec["t"], str(rec.get("model"))))
            continue
        if kind == "w":
            rec.setdefault("alerts", [])
            data.windows.append(rec)
        elif kind == "alert":
            data.alerts.append(rec)
            if data.windows:
                data.windows[-1]["alerts"].append(rec.get("state"))
        elif kind == "ex":
            data.exercises.append(rec)
        elif kind == "q":
            data.quality[-1].append(rec)
        elif kind == "resume":
            data.resumes.append(float(rec["t"]))
            data.quality.append([])
        elif kind == "model":
            data.models.append((rec["t"], str(rec.get("model"))))
        elif kind == "stop":
            data.stop = rec
    if data is None:
        raise InputError(f"{path}: empty or not a session log")
    data.bad_lines = bad
    return data


def _protective(w: dict[str, Any]) -> bool:
    return w.get("st") == "active"


def _quality(data: SessionData) -> dict[str, int]:
    """Counter increases over the session, summed over gateway runs (counters restart with the gateway)."""
    out: Counter[str] = Counter()
    for run in data.quality:
        if len(run) >= 2:
            first, last = run[0], run[-1]
            for k, v in last.items():
                if k not in ("k", "t") and isinstance(v, int) and isinstance(first.get(k), int):
                    out[k] += max(0, v - first[k])
    return dict(out)


def _timeline_gaps(data: SessionData) -> list[tuple[float, float]]:
    limit = GAP_FACTOR * data.stride_s
    gaps = []
    prev = data.t0
    for w in data.windows:
        if w["t"] - prev > limit + float(data.start.get("window_s") or 0.0):
            gaps.append((prev - data.t0, w["t"] - data.t0))
        prev = w["t"]
    return gaps


def episodes(data: SessionData) -> list[dict[str, Any]]:
    """Protective episodes: runs of windows during which the gateway's decision was active (so their
    lengths add up to the protective time), with the exercise at their start and what drove the raise."""
    out: list[dict[str, Any]] = []
    raises = [a for a in data.alerts if a.get("state") == "raised" and a.get("type") != "pain"]
    run: list[dict[str, Any]] = []
    for w in data.windows + [{"t": float("inf"), "st": None}]:
        if _protective(w):
            run.append(w)
            continue
        if run:
            t0, t1 = run[0]["t"], run[-1]["t"]
            cause = next((a for a in raises if t0 - data.stride_s <= a["t"] <= t1), None)
            out.append({"from": max(0.0, t0 - data.t0 - data.stride_s), "to": t1 - data.t0, "windows": len(run),
                        "exercise": run[0].get("ex"), "probability": cause.get("probability") if cause else None,
                        "attention": (cause or {}).get("attention") or run[0].get("att")})
            run = []
    return out


def summarise(data: SessionData) -> dict[str, Any]:
    """The session's figures (JSON-ready); the same numbers the HTML report and the history show."""
    stride = data.stride_s
    pain_task = data.task == "pain"
    per: OrderedDict[str | None, dict[str, Any]] = OrderedDict()
    for w in data.windows:
        ex = w.get("ex")
        e = per.setdefault(ex, {"exercise": ex, "label": exercise_label(ex), "windows": 0, "protective_windows": 0,
                                "episodes": 0, "pain": Counter()})
        e["windows"] += 1
        if _protective(w):
            e["protective_windows"] += 1
        if pain_task:
            e["pain"][w.get("st") or "unconfirmed"] += 1
    for a in data.alerts:
        if a.get("state") == "raised":
            ex = a.get("ex")
            per.setdefault(ex, {"exercise": ex, "label": exercise_label(ex), "windows": 0, "protective_windows": 0,
                                "episodes": 0, "pain": Counter()})["episodes"] += 1
    rows = []
    for e in per.values():
        row = {"exercise": e["exercise"], "label": e["label"], "windows": e["windows"],
               "seconds": round(e["windows"] * stride, 2)}
        if pain_task:
            row["pain"] = dict(e["pain"])
        else:
            row["protective_windows"] = e["protective_windows"]
            row["protective_s"] = round(e["protective_windows"] * stride, 2)
            row["protective_share"] = round(e["protective_windows"] / e["windows"], 4) if e["windows"] else 0.0
            row["episodes"] = e["episodes"]
        rows.append(row)
    n = len(data.windows)
    q = _quality(data)
    s: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA, "session": data.start["session"], "gateway": data.start.get("gateway"),
        "wearer": data.start.get("wearer"), "task": data.task, "labels": data.labels,
        "models": sorted({m for _, m in data.models}), "started": utc_iso(data.t0),
        "stopped": utc_iso(float(data.stop["t"])) if data.stop else None,
        "duration_s": round(data.t_end - data.t0, 2), "windows": n, "stride_s": stride,
        "analysed_s": round(n * stride, 2), "exercises": rows,
        "quality": {"gaps": q.get("gaps", 0), "lost_frames": q.get("lost", 0), "crc_errors": q.get("crc_errors", 0),
                    "serial_reconnects": q.get("serial_reconnects", 0), "gateway_restarts": len(data.resumes),
                    "timeline_gaps": len(_timeline_gaps(data)), "unreadable_lines": data.bad_lines},
    }
    if pain_task:
        dist = Counter(w.get("st") or "unconfirmed" for w in data.windows)
        s["pain"] = {lab: dist.get(lab, 0) for lab in data.labels} | ({"unconfirmed": dist["unconfirmed"]}
                                                                     if dist.get("unconfirmed") else {})
        levels = [data.labels.index(w["st"]) for w in data.windows if w.get("st") in data.labels]
        s["pain_mean_level"] = round(sum(levels) / len(levels), 3) if levels else None
    else:
        prot = sum(1 for w in data.windows if _protective(w))
        s["protective_windows"] = prot
        s["protective_s"] = round(prot * stride, 2)
        s["protective_share"] = round(prot / n, 4) if n else 0.0
        s["episodes"] = sum(1 for a in data.alerts if a.get("state") == "raised")
    parts = _attention_parts(w for w in data.windows if _protective(w) or pain_task)
    if parts:
        s["attention"] = parts
    return s


def _attention_parts(windows: Iterable[dict[str, Any]], top: int = 3) -> list[dict[str, Any]]:
    """Body parts most often among the top attention weights over the given windows."""
    score: Counter[str] = Counter()
    labels: dict[str, str] = {}
    for w in windows:
        for p in (w.get("att") or {}).get("body") or []:
            score[p["part"]] += float(p["weight"])
            labels[p["part"]] = p.get("label") or p["part"]
    total = sum(score.values())
    return [{"part": k, "label": labels[k], "share": round(v / total, 3)} for k, v in score.most_common(top)] \
        if total > 0 else []


# ---------------------------------------------------------------------------- CSV


def render_csv(data: SessionData) -> str:
    """One row per logged window: time, exercise, probabilities, decision, alerts, attention."""
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    labels = data.labels
    wr.writerow(["time", "session_s", "window", "seq", "t_end", "exercise", *[f"p_{lab}" for lab in labels],
                 "smoothed", "state", "alerts", "attention_peak_s", "attention_top"])
    for w in data.windows:
        att = w.get("att") or {}
        probs = list(w.get("p") or [])
        wr.writerow([utc_iso(w["t"]), f"{w['t'] - data.t0:.3f}", w.get("n"), w.get("seq"), w.get("te"),
                     w.get("ex") or "", *[probs[i] if i < len(probs) else "" for i in range(len(labels))],
                     w.get("s"), w.get("st") or "", " ".join(w.get("alerts") or []),
                     att.get("peak_s", ""), " ".join(p["part"] for p in att.get("body") or [])])
    return buf.getvalue()


# ---------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1000px;padding:1rem 1.2rem;color:#1b1f24}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ddd}
.meta{color:#5f6b76;margin:.2rem 0 .8rem}.kpis{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:.6rem 0}
.kpi{display:flex;flex-direction:column}.kpi b{font-size:1.6rem}.kpi span{color:#5f6b76;font-size:.85rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e5e5e5}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}svg{width:100%;height:auto;display:block}
.sw{display:inline-block;width:.9em;height:.9em;border-radius:2px;vertical-align:-.1em;margin-right:.35em}
.note{color:#5f6b76;font-size:.9rem}.legend{display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.85rem;margin:.3rem 0}
ul.notes{margin:.3rem 0;padding-left:1.2rem}
@media print{body{max-width:none}h2{break-after:avoid}svg{break-inside:avoid}}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _mmss(s: float) -> str:
    s = max(0.0, float(s))
    return f"{int(s // 60)}:{int(s % 60):02d}"


def _runs(values: Sequence[tuple[float, Any]]) -> list[tuple[float, float, Any]]:
    """[(t, v)] → [(t_from, t_to, v)] runs of equal ``v``."""
    out: list[list[Any]] = []
    for t, v in values:
        if out and out[-1][2] == v:
            out[-1][1] = t
        else:
            out.append([t, t, v])
    return [(a, b, v) for a, b, v in out]


def timeline_svg(data: SessionData, width: int = 960, height: int = 260) -> str:
    """The session timeline: smoothed probability (or pain level), threshold, episodes, exercises, restarts."""
    pad_l, pad_r, pad_t, band = 40, 10, 10, 22
    plot_h = height - pad_t - band - 34
    span = max(data.t_end - data.t0, data.stride_s)
    sx = lambda t: pad_l + (t / span) * (width - pad_l - pad_r)  # noqa: E731
    pain_task = data.task == "pain"
    top = max(1, len(data.labels) - 1) if pain_task else 1.0
    sy = lambda v: pad_t + (1 - v / top) * plot_h  # noqa: E731
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="session timeline" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">']
    for ep in episodes(data):
        x0, x1 = sx(ep["from"]), sx(ep["to"])
        parts.append(f'<rect class="episode" x="{x0:.1f}" y="{pad_t}" width="{max(1.5, x1 - x0):.1f}" '
                     f'height="{plot_h}" fill="#c62828" fill-opacity="0.15"/>')
    ticks = [0, 0.5, 1.0] if not pain_task else list(range(len(data.labels)))
    for v in ticks:
        y = sy(v)
        lab = f"{v:.1f}" if not pain_task else data.labels[int(v)]
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#5f6b76">{_e(lab)}</text>')
    thr = data.start.get("threshold")
    if not pain_task and isinstance(thr, (int, float)):
        y = sy(float(thr))
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c62828" '
                     f'stroke-dasharray="6 4"/><text x="{width - pad_r - 4}" y="{y - 4:.1f}" text-anchor="end" '
                     f'fill="#c62828">alert {float(thr):.2f}</text>')
    segs: list[list[str]] = [[]]
    prev = None
    for w in data.windows:
        t = w["t"] - data.t0
        if prev is not None and t - prev > GAP_FACTOR * data.stride_s + float(data.start.get("window_s") or 0):
            segs.append([])
        prev = t
        if pain_task:
            v = float(data.labels.index(w["st"])) if w.get("st") in data.labels else None
        else:
            v = float(w.get("s") or 0.0)
        if v is not None:
            segs[-1].append(f"{sx(t):.1f},{sy(v):.1f}")
    for seg in segs:
        if seg:
            parts.append(f'<polyline class="trace" points="{" ".join(seg)}" fill="none" stroke="#1565c0" '
                         f'stroke-width="1.6"/>')
    yb = pad_t + plot_h + 6
    for a, b, ex in _runs([(w["t"] - data.t0, w.get("ex")) for w in data.windows]):
        x0, x1 = max(pad_l, sx(a - data.stride_s / 2)), min(width - pad_r, sx(b + data.stride_s / 2))
        parts.append(f'<rect class="exercise" data-exercise="{_e(ex or "none")}" x="{x0:.1f}" y="{yb}" '
                     f'width="{max(1.0, x1 - x0):.1f}" height="{band - 6}" '
                     f'fill="{EXERCISE_COLOURS.get(ex, "#9e9e9e")}"><title>{_e(exercise_label(ex))}</title></rect>')
    for t in data.resumes:
        x = sx(t - data.t0)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_t}" y2="{yb + band - 6}" stroke="#8a6d00" '
                     f'stroke-dasharray="2 3"/><text x="{x + 3:.1f}" y="{pad_t + 10}" fill="#8a6d00">restart</text>')
    step = next(s for s in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 1e9) if span / s <= 10)
    k = 0.0
    while k <= span + 1e-9:
        x = sx(k)
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" fill="#5f6b76">{_mmss(k)}</text>')
        k += step
    parts.append("</svg>")
    return "".join(parts)


def _bars_svg(rows: list[tuple[str, float, str]], unit: str, width: int = 960) -> str:
    """Horizontal bars: (label, value, colour)."""
    if not rows:
        return ""
    h = 24 * len(rows) + 8
    vmax = max(v for _, v, _ in rows) or 1.0
    parts = [f'<svg viewBox="0 0 {width} {h}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">']
    for i, (lab, v, col) in enumerate(rows):
        y = 4 + 24 * i
        w = (v / vmax) * (width - 320)
        parts.append(f'<text x="150" y="{y + 15}" text-anchor="end">{_e(lab)}</text>'
                     f'<rect x="160" y="{y + 3}" width="{max(w, 0.5):.1f}" height="16" fill="{col}"/>'
                     f'<text x="{166 + w:.1f}" y="{y + 15}">{_e(unit.format(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(data: SessionData, summary: dict[str, Any] | None = None) -> str:
    """The self-contained report page (inline CSS and SVG, no script or external resource)."""
    s = summary or summarise(data)
    pain_task = data.task == "pain"
    title = f"Session {s['session']}"
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
           f'content="width=device-width, initial-scale=1"><title>{_e(title)}</title><style>{CSS}</style></head><body>',
           f"<h1>{_e(title)}</h1>",
           f'<p class="meta">Wearer <b>{_e(s["wearer"])}</b> on gateway {_e(s["gateway"])} · started {_e(s["started"])}'
           f' · {"stopped " + _e(s["stopped"]) if s["stopped"] else "<b>not stopped</b> (log still open)"}'
           f" · duration {_mmss(s['duration_s'])}</p>",
           '<div class="kpis">']
    kpis = [(str(s["windows"]), "windows analysed"), (_mmss(s["analysed_s"]), "analysed time")]
    if pain_task:
        mean = s.get("pain_mean_level")
        kpis.append((f"{mean:.2f}" if mean is not None else "–", "mean pain level (0 = " + _e(data.labels[0]) + ")"))
    else:
        kpis += [(_mmss(s["protective_s"]), "protective behaviour"), (f"{100 * s['protective_share']:.0f} %", "of the time"),
                 (str(s["episodes"]), "episodes")]
    out += [f'<div class="kpi"><b>{v}</b><span>{lab}</span></div>' for v, lab in kpis]
    out.append("</div><h2>Timeline</h2>")
    out.append(timeline_svg(data))
    used = list(OrderedDict.fromkeys(w.get("ex") for w in data.windows))
    out.append('<div class="legend">' + "".join(
        f'<span><i class="sw" style="background:{EXERCISE_COLOURS.get(ex, "#9e9e9e")}"></i>{_e(exercise_label(ex))}</span>'
        for ex in used) + ('<span><i class="sw" style="background:#c62828;opacity:.3"></i>protective episode</span>'
                           if not pain_task else "") + "</div>")
    out.append("<h2>Per exercise</h2><table id=\"per-exercise\"><thead><tr><th>exercise</th><th class=num>time</th>")
    if pain_task:
        out.append("".join(f"<th class=num>{_e(lab)}</th>" for lab in data.labels) + "</tr></thead><tbody>")
    else:
        out.append("<th class=num>protective</th><th class=num>share</th><th class=num>episodes</th></tr></thead><tbody>")
    for r in s["exercises"]:
        cells = [f'<td><i class="sw" style="background:{EXERCISE_COLOURS.get(r["exercise"], "#9e9e9e")}"></i>'
                 f'{_e(r["label"])}</td>', f'<td class=num data-field="seconds" data-value="{r["seconds"]}">'
                 f'{_mmss(r["seconds"])}</td>']
        if pain_task:
            cells += [f'<td class=num data-field="pain-{_e(lab)}" data-value="{r["pain"].get(lab, 0)}">'
                      f'{_mmss(r["pain"].get(lab, 0) * data.stride_s)}</td>' for lab in data.labels]
        else:
            cells += [f'<td class=num data-field="protective_s" data-value="{r["protective_s"]}">'
                      f'{_mmss(r["protective_s"])}</td>',
                      f'<td class=num data-field="protective_share" data-value="{r["protective_share"]}">'
                      f'{100 * r["protective_share"]:.0f} %</td>',
                      f'<td class=num data-field="episodes" data-value="{r["episodes"]}">{r["episodes"]}</td>']
        out.append(f'<tr data-exercise="{_e(r["exercise"] or "none")}">{"".join(cells)}</tr>')
    out.append("</tbody></table><p class=note>Times (min:s) are windows × stride "
               f"({data.stride_s:g} s of new data per window); a window counts as protective while the gateway's "
               "decision was active.</p>")
    if pain_task:
        out.append("<h2>Pain-level estimate</h2>")
        colours = ["#2e7d32", "#f9a825", "#c62828", "#6a1b9a", "#455a64"]
        out.append(_bars_svg([(lab, float(s["pain"].get(lab, 0)) * data.stride_s, colours[i % len(colours)])
                              for i, lab in enumerate(s["pain"])], "{:.0f} s"))
    else:
        out.append("<h2>Protective time per exercise</h2>")
        out.append(_bars_svg([(r["label"], float(r["protective_s"]), EXERCISE_COLOURS.get(r["exercise"], "#9e9e9e"))
                              for r in s["exercises"]], "{:.1f} s"))
        eps = episodes(data)
        out.append(f"<h2>Episodes ({len(eps)})</h2>")
        if eps:
            out.append("<table id=episodes><thead><tr><th>from</th><th>to</th><th>exercise</th><th>what drove it</th>"
                       "</tr></thead><tbody>")
            for ep in eps:
                out.append(f"<tr><td>{_mmss(ep['from'])}</td><td>{_mmss(ep['to'])}</td>"
                           f"<td>{_e(exercise_label(ep['exercise']))}</td>"
                           f"<td>{_e(describe(ep.get('attention')) or '–')}</td></tr>")
            out.append("</tbody></table>")
    if s.get("attention"):
        what = "during protective behaviour" if not pain_task else "over the session"
        out.append(f"<p>Body parts the model attended to most {what}: " + ", ".join(
            f"{_e(p['label'])} ({100 * p['share']:.0f} %)" for p in s["attention"]) + ".</p>")
    q = s["quality"]
    notes = [f"Model{'s' if len(s['models']) > 1 else ''}: {_e(', '.join(s['models']))} ({_e(data.task)}; "
             f"labels {_e(', '.join(data.labels))}).",
             f"Serial link: {q['gaps']} sequence gap(s) ({q['lost_frames']} frame(s) lost), {q['crc_errors']} CRC "
             f"error(s), {q['serial_reconnects']} reconnect(s).",
             f"Gateway restarts during the session: {q['gateway_restarts']}; gaps in the timeline: {q['timeline_gaps']}."]
    if q["unreadable_lines"]:
        notes.append(f"{q['unreadable_lines']} unreadable log line(s) skipped (a write cut by a power loss).")
    if len(s["models"]) > 1:
        notes.append("The model changed during the session (a bundle was flashed): figures mix both models.")
    notes.append("Demo and synthetic-data models say nothing about real patients; this page supports, not replaces, "
                 "clinical judgement.")
    out.append("<h2>Model and data quality</h2><ul class=notes>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>")
    out.append(f'<script type="application/json" id="alanet-summary">{_json_for_html(s)}</script>')
    out.append(f'<p class=note>Made by ALANet Edge from {_e(data.path.name)}.</p></body></html>')
    return "".join(out)


def _json_for_html(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_exports(log_path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``<session>.csv`` and ``<session>.html`` next to the log (or into ``out_dir``); return the summary."""
    log_path = Path(log_path)
    data = read_log(log_path)
    s = summarise(data)
    base = (Path(out_dir) if out_dir else log_path.parent) / log_path.stem
    atomic.write_text(base.with_suffix(".csv"), render_csv(data))
    atomic.write_text(base.with_suffix(".html"), render_html(data, s))
    return s


def find_session(ref: str, state_dir: str | Path) -> Path:
    """A session log from a path or a session id (looked up under ``<state_dir>/sessions/*/``)."""
    p = Path(ref)
    if p.is_file():
        return p
    if p.suffix == "" and "/" not in ref:
        hits = sorted(Path(state_dir).glob(f"sessions/*/{ref}.jsonl"))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"SESSION {ref!r}: found under several wearers: {', '.join(map(str, hits))}")
        raise InputError(f"SESSION {ref!r}: no such session log under {Path(state_dir) / 'sessions'} "
                         "(give the .jsonl path or --state-dir)")
    raise InputError(f"{ref}: no such session log")


def cmd_report(args: argparse.Namespace) -> int:
    """``alanet report SESSION``."""
    from alanet.device.config import default_state_dir

    path = find_session(args.session, args.state_dir or default_state_dir())
    data = read_log(path)
    s = summarise(data)
    out = Path(args.out) if args.out else path.with_suffix(".html")
    if out.suffix.lower() != ".html":
        raise InputError(f"--out {out}: must end in .html")
    atomic.write_text(out, render_html(data, s))
    written = [out]
    if not args.no_csv:
        atomic.write_text(out.with_suffix(".csv"), render_csv(data))
        written.append(out.with_suffix(".csv"))
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        what = (f"protective {_mmss(s['protective_s'])} in {s['episodes']} episode(s)" if "protective_s" in s
                else f"mean pain level {s.get('pain_mean_level')}")
        print(f"session {s['session']} ({s['wearer']}): {s['windows']} windows, {what}; wrote "
              + ", ".join(map(str, written)))
    return 0


__all__ = ["SessionData", "read_log", "summarise", "episodes", "render_csv", "render_html", "timeline_svg",
           "write_exports", "find_session", "cmd_report", "EXERCISE_LABELS"]

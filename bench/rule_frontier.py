"""How far can the alert rule alone take a protective bundle on a stream?

Plays fresh synthetic patient sessions through the bundle as the gateway does
(:func:`alanet.convert.build_demo_bundles.play_sessions`), then scores every alert rule
of the wide grid (:func:`alanet.train.calibrate.wide_rules`: smoothing, raise
threshold, clear threshold as a share of it, windows to raise, windows to clear; the
rest of the bundle's ``decision`` block kept) with the
toolkit's stream scorer, and reports, per false-alarm budget, the best hit rate any
rule reaches, with and without the active-time precision target (≥ 0.7).

The rule is picked in hindsight, on the scored sessions themselves: an upper bound of
what choosing the rule better could give, not a result. When even that bound misses
the stream target, the window probabilities, not the rule, have to improve.

    python bench/rule_frontier.py [--bundle models/protective-demo] [--seeds 101,...] [--duration 300]

Prints the frontier and saves it to bench/results/rule_frontier.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, Figure, write_result  # noqa: E402

FA_BUDGETS = (1.0, 2.0, 3.0, 5.0)  # false alarms per 10 minutes


def frontier(bundle: Path, seeds: tuple[int, ...], duration_s: float, log=print) -> dict:
    """The best hit rate of any rule of the grid at each false-alarm budget (see the module docstring)."""
    from alanet.convert.build_demo_bundles import play_sessions
    from alanet.device.scoring import StreamScore, score_windows
    from alanet.errors import InputError
    from alanet.train.calibrate import StreamTarget, wide_rules

    b, played = play_sessions(bundle, seeds, duration_s)
    if b.task != "protective":
        raise InputError(f"{bundle}: a protective bundle is needed, this one is for {b.task!r}")
    fs, L = b.schema.sample_rate_hz, b.window
    grid = wide_rules(b.decision)
    log(f"{bundle}: {len(seeds)} sessions of {duration_s:g} s, {len(grid)} rules ...")
    scored = []
    for rule in grid:
        s = StreamScore.combine([score_windows(b.task, rule, b.labels, p, st, L, fs, lab) for p, st, lab in played])
        scored.append(({k: rule[k] for k in ("smoothing_alpha", "raise_threshold", "clear_threshold",
                                            "min_raise_windows", "min_clear_windows")},
                       {"hits": s.hits, "episodes": s.episodes, "hit_rate": round(s.hit_rate, 4),
                        "false_alarms_per_10min": round(s.false_alarms_per_10min, 2),
                        "active_precision": round(s.active_precision, 4)}))

    def best(ok) -> dict | None:
        ok = list(ok)
        if not ok:
            return None
        rule, score = max(ok, key=lambda rs: (rs[1]["hit_rate"], rs[1]["active_precision"]))
        return {**score, "rule": rule}

    out = []
    for fa in FA_BUDGETS:
        within = [rs for rs in scored if rs[1]["false_alarms_per_10min"] <= fa]
        out.append({"false_alarms_per_10min_at_most": fa, "best": best(within),
                    "best_with_precision_target": best(rs for rs in within
                                                       if rs[1]["active_precision"] >= StreamTarget().min_active_precision)})
    shipped = StreamScore.combine([score_windows(b.task, b.decision, b.labels, p, st, L, fs, lab)
                                   for p, st, lab in played])
    return {"bundle": str(bundle), "model_id": b.model_id, "seeds": list(seeds), "each_session_s": duration_s,
            "rules": len(grid), "episodes": shipped.episodes,
            "bundle_rule": {"hit_rate": round(shipped.hit_rate, 4),
                            "false_alarms_per_10min": round(shipped.false_alarms_per_10min, 2),
                            "active_precision": round(shipped.active_precision, 4)},
            "frontier": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="The rule is picked on the scored sessions: an upper bound, not a result.")
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "protective-demo")
    ap.add_argument("--seeds", default="101,102,103,104,105", help="synthetic session seeds, comma-separated")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per session (default 300)")
    ap.add_argument("--out", type=Path, default=RESULTS / "rule_frontier.json")
    args = ap.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not seeds or args.duration < 10:
        ap.error("--seeds needs at least one seed and --duration at least 10 s")
    from alanet.errors import InputError

    t0 = time.perf_counter()
    try:
        res = frontier(args.bundle, seeds, args.duration)
    except InputError as exc:
        print(f"rule_frontier: error: {exc}", file=sys.stderr)
        return 2
    res["seconds"] = round(time.perf_counter() - t0, 1)
    bundle = args.bundle.resolve()
    res["bundle"] = str(bundle.relative_to(REPO)) if bundle.is_relative_to(REPO) else str(args.bundle)
    br = res["bundle_rule"]
    print(f"the bundle's own rule: hits {br['hit_rate']:.0%}, {br['false_alarms_per_10min']} false alarms per 10 min, "
          f"active-time precision {br['active_precision']:.2f} ({res['episodes']} episodes)")
    for f in res["frontier"]:
        b, p = f["best"], f["best_with_precision_target"]
        line = f"  ≤ {f['false_alarms_per_10min_at_most']:g} false alarms / 10 min: "
        line += "no rule" if b is None else (f"best hit rate {b['hit_rate']:.0%} (precision {b['active_precision']:.2f})")
        line += "; with precision ≥ 0.7: " + ("no rule" if p is None else f"{p['hit_rate']:.0%}")
        print(line)
    at2 = next(f for f in res["frontier"] if f["false_alarms_per_10min_at_most"] == 2.0)
    how = (f"best of {res['rules']} alert rules picked in hindsight on {len(seeds)} fresh synthetic sessions "
           f"(seeds {args.seeds}) at <= 2 false alarms per 10 min")
    figures = [Figure("rule_frontier.hit_rate_at_2_fa", "Protective bundle: best hit rate any alert rule reaches at "
                      "<= 2 false alarms / 10 min (upper bound)", None if at2["best"] is None else at2["best"]["hit_rate"],
                      "share of episodes", how, better="higher")]
    print(f"saved {write_result('rule_frontier', res, figures, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

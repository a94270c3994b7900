#!/usr/bin/env python3
"""Helpers for scripts/bench (standard library only).

  report.py hist BEFORE AFTER METRIC   server-side quantiles of METRIC's histogram
                                       between two /metrics scrapes, as JSON
  report.py k6 SUMMARY                 throughput and client percentiles from a
                                       `k6 run --summary-export` file, as JSON
  report.py table RESULTS MACHINE CMD  the markdown of the `## Load` section
  report.py criterion DIR CMD          the markdown of the `## Pipeline benches`
                                       section from criterion's estimates in DIR
  report.py wrk RESULTS MACHINE CMD    the markdown of the `## Throughput (wrk)` section
  report.py callgrind RESULTS MACHINE CMD
                                       the markdown of the `## Instructions per
                                       request (callgrind)` section
  report.py fixed RESULTS MACHINE CMD FSYNC_P99_MS
                                       the markdown of the `## Latency at a fixed
                                       rate (loadgen)` section
  report.py splice FILE NAME HEADING SECTION_FILE
                                       replaces FILE's text between the
                                       bench:NAME markers; if absent, puts them
                                       right under the line HEADING, or appends a
                                       HEADING section with them
"""

import json
import os
import re
import sys

QUANTILES = (0.5, 0.9, 0.99, 0.999)

# scripts/bench's cardgate targets and the `[store]` settings each runs with.
VARIANTS = {
    "cardgate": 'durability = "sync"',
    "cardgate-async": 'durability = "async"',
    "cardgate-nostore": "enabled = false",
}

# wrk-only rows: cardgate on PostgreSQL (scripts/bench), not in the k6 tables.
PG_VARIANTS = {
    "cardgate-pg-async": 'PostgreSQL, durability = "async"',
    "cardgate-pg": 'PostgreSQL, durability = "sync"',
    "cardgate-pg-async-x3": '3 replicas + nginx LB, PostgreSQL, "async"',
    "cardgate-pg-x3": '3 replicas + nginx LB, PostgreSQL, "sync"',
}


def buckets(path, metric):
    """Cumulative bucket counts {le: count} summed over label sets."""
    pat = re.compile(r"^" + re.escape(metric) + r"_bucket\{(.*)\}\s+(\S+)")
    out = {}
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
            le = float("inf") if le == "+Inf" else float(le)
            out[le] = out.get(le, 0.0) + float(m.group(2))
    return out


def quantiles(before, after):
    """Quantiles of the observations between two scrapes, interpolating linearly
    inside a bucket (as Prometheus' histogram_quantile does)."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    total = counts[-1] if counts else 0.0
    res = {"count": total}
    for q in QUANTILES:
        if total <= 0:
            res[f"p{q * 100:g}"] = None
            continue
        rank = q * total
        prev_le, prev_c = 0.0, 0.0
        for le, c in zip(les, counts):
            if c >= rank:
                if le == float("inf"):
                    res[f"p{q * 100:g}"] = prev_le  # beyond the last finite bucket
                else:
                    frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
                    res[f"p{q * 100:g}"] = prev_le + (le - prev_le) * frac
                break
            prev_le, prev_c = le, c
    return res


def k6(path):
    m = json.load(open(path))["metrics"]
    d = m["http_req_duration"]
    fb = m.get("cardgate_fallback_answers", {}).get("count", 0)
    return {
        "rps": m["http_reqs"]["rate"],
        "requests": m["http_reqs"]["count"],
        "failed": m["http_req_failed"].get("value", 0.0),
        "checks": m["checks"].get("value", 1.0),
        "fallbacks": fb,
        # k6 reports milliseconds
        "p50": d["med"] / 1000,
        "p90": d["p(90)"] / 1000,
        "p99": d["p(99)"] / 1000,
        "p99.9": d["p(99.9)"] / 1000,
    }


def fmt_s(v):
    if v is None:
        return "–"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    return f"{v * 1e3:.2f} ms"


def table(results_path, machine_path, command):
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    machine = open(machine_path).read().strip()
    base = {(r["scenario"]): r for r in rows if r["target"] == "baseline"}
    out = []
    out.append(f"Measured by `{command}` on {machine}.")
    out.append("")
    out.append(
        "k6 and both servers share the box, so k6's own CPU use caps every figure; "
        "other work on the machine at the time adds noise. Client percentiles are "
        "k6's `http_req_duration`; server percentiles are estimated from "
        "`cardgate_webhook_duration_seconds` buckets (linear inside a bucket), scraped "
        "before and after each scenario. Ratio = cardgate ÷ baseline throughput in "
        "the same scenario."
    )
    out.append("")
    out.append(
        "| target | scenario | offered | achieved req/s | client p50 | p90 | p99 | p99.9 "
        "| server p50 | p90 | p99 | p99.9 | errors | fallbacks | checks | ratio |"
    )
    out.append("|" + "---|" * 16)
    for r in rows:
        c, s = r["client"], r.get("server") or {}
        b = base.get(r["scenario"])
        ratio = f"{c['rps'] / b['client']['rps']:.2f}" if b and r["target"] != "baseline" else "–"
        out.append(
            f"| {r['target']} | {r['scenario']} | {r['offered']} | {c['rps']:.0f} "
            f"| {fmt_s(c['p50'])} | {fmt_s(c['p90'])} | {fmt_s(c['p99'])} | {fmt_s(c['p99.9'])} "
            f"| {fmt_s(s.get('p50'))} | {fmt_s(s.get('p90'))} | {fmt_s(s.get('p99'))} | {fmt_s(s.get('p99.9'))} "
            f"| {c['failed'] * 100:.2f} % | {c['fallbacks']:.0f} | {c['checks'] * 100:.2f} % | {ratio} |"
        )
    # Targets of issue 7, computed, not asserted.
    cg_max = next((r for r in rows if r["target"] == "cardgate" and r["scenario"] == "max"), None)
    bl_max = base.get("max")
    half = next((r for r in rows if r["target"] == "cardgate" and r["scenario"] == "rate 50%"), None)
    out.append("")
    if cg_max and bl_max:
        ratio = cg_max["client"]["rps"] / bl_max["client"]["rps"]
        short = round((0.6 - ratio) * 100)
        verdict = "met" if ratio >= 0.6 else f"missed by {short} point{'' if short == 1 else 's'}"
        out.append(f"- Throughput target (≥ 60 % of baseline): {ratio * 100:.0f} % — {verdict}.")
    if half and half.get("server") and half["server"].get("p99") is not None:
        p99 = half["server"]["p99"]
        verdict = "met" if p99 < 1e-3 else f"missed by {fmt_s(p99 - 1e-3)}"
        out.append(f"- Server-side p99 at 50 % of max (< 1 ms): {fmt_s(p99)} — {verdict}.")
    bad = [r for r in rows if r["client"]["failed"] > 0 or r["client"]["fallbacks"] > 0]
    out.append(
        "- Errors and fallbacks: "
        + ("none in any scenario." if not bad else f"present in {len(bad)} scenario(s), see table.")
    )
    variants = [(t, VARIANTS[t]) for t in VARIANTS if any(r["target"] == t for r in rows)]
    if len(variants) > 1 and bl_max:
        out.append("")
        out.append(
            "Durability (issue 4): the same binary and config file with only `[store]` "
            "changed, in this run. Ratio = max throughput ÷ the baseline's max."
        )
        out.append("")
        out.append(
            "| cardgate | `[store]` | max req/s | ratio | server p99 at max "
            "| server p99 at 50 % | errors | fallbacks |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for t, store in variants:
            mx = next((r for r in rows if r["target"] == t and r["scenario"] == "max"), None)
            h = next((r for r in rows if r["target"] == t and r["scenario"] == "rate 50%"), None)
            if not mx:
                continue
            mine = [r for r in rows if r["target"] == t]
            out.append(
                f"| {t} | {store} | {mx['client']['rps']:.0f} "
                f"| {mx['client']['rps'] / bl_max['client']['rps']:.2f} "
                f"| {fmt_s((mx.get('server') or {}).get('p99'))} "
                f"| {fmt_s(((h or {}).get('server') or {}).get('p99'))} "
                f"| {max(r['client']['failed'] for r in mine) * 100:.2f} % "
                f"| {sum(r['client']['fallbacks'] for r in mine):.0f} |"
            )
    return "\n".join(out) + "\n"


def criterion(root, command, machine_path):
    rows = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) == "new" and "estimates.json" in files:
            bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
            est = json.load(open(os.path.join(dirpath, "estimates.json")))
            rows.append((bench["full_id"], est["median"], est["mean"]))
    rows.sort()
    machine = open(machine_path).read().strip()
    out = [f"Measured by `{command}` on {machine} (criterion, 2 s per bench; "
           "other work on the box adds noise).", ""]
    out.append("| bench | median | mean | 95 % CI of mean |")
    out.append("|---|---|---|---|")
    for name, med, mean in rows:
        ci = mean["confidence_interval"]
        out.append(
            f"| `{name}` | {fmt_ns(med['point_estimate'])} | {fmt_ns(mean['point_estimate'])} "
            f"| {fmt_ns(ci['lower_bound'])} – {fmt_ns(ci['upper_bound'])} |"
        )
    return "\n".join(out) + "\n"


def fmt_ns(ns):
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def splice(path, name, heading, section_path):
    """Replaces the section between the NAME markers, each alone on its line.

    Only a marker that is a whole line counts: prose that quotes a marker (the
    file's introduction does) must never be taken for one, which is how an earlier
    version duplicated the header and the load table.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    section = open(section_path).read()
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    lines = text.split("\n")
    starts = [i for i, l in enumerate(lines) if l.strip() == start]
    ends = [i for i, l in enumerate(lines) if l.strip() == end]
    if len(starts) > 1 or len(ends) > 1 or len(starts) != len(ends):
        sys.exit(f"{path}: expected one line `{start}` and one `{end}`, "
                 f"found {len(starts)} and {len(ends)}")
    block = [start] + section.rstrip("\n").split("\n") + [end]
    heads = [i for i, l in enumerate(lines) if l.strip() == heading]
    if starts:
        a, b = starts[0], ends[0]
        if b < a:
            sys.exit(f"{path}: `{end}` comes before `{start}`")
        lines = lines[:a] + block + lines[b + 1:]
        text = "\n".join(lines)
    elif heads:
        # A heading written by hand where the section belongs (a new section need
        # not go last): the markers go right under it.
        a = heads[0] + 1
        lines = lines[:a] + [""] + block + lines[a:]
        text = "\n".join(lines)
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + "\n".join(block) + "\n"
    open(path, "w").write(text)


def wrk_table(results_path, machine_path, command):
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    machine = open(machine_path).read().strip()
    order = ["nginx", "baseline", "cardgate-nostore", "cardgate-async", "cardgate", *PG_VARIANTS]
    out = [f"Measured by `{command}` on {machine}.", ""]
    out.append(
        f"wrk (one thread, 32 connections, {rows[0].get('duration', '10s')} per target and round) pinned to one core, "
        "the server pinned to the other (`taskset`), every server in the same run, each "
        "started fresh with an empty data directory. Requests cycle over 2,000 distinct "
        "events signed before the run (`load-tests/wrk_events.py`), so the generator "
        "spends nothing on HMAC; `load-tests/wrk.lua` counts every answer that is not a "
        "200 decision. nginx answering a constant shows the generator's own ceiling: a "
        "server near it is measured by wrk, not by itself. Ratio = req/s ÷ the bare hyper "
        "baseline's in the same round. Past its first 2,000 requests every request "
        "re-sends an event already answered (as Stripe's retries do): it is decided and "
        "logged again but holds nothing new, so `sync` waits for no commit on it; these "
        "rows are the store's cost per logged decision, not the rate of durable holds "
        "(the fixed-rate table, whose events are all distinct approvals, measures those)."
    )
    if any(r["target"] in PG_VARIANTS for r in rows):
        out.append("")
        out.append(
            "The `cardgate-pg` rows keep every hold and decision in a throwaway PostgreSQL "
            "(the server's defaults: fsync on; `sync` commits each hold before answering, "
            "`async` sets `synchronous_commit = off`), each run on a fresh database. "
            "PostgreSQL, the replicas and (for `x3`) nginx as a round-robin load balancer "
            "all run on the server's one core: on two cores the three-replica rows show "
            "what the replicated set-up costs, not how it scales. Each decision makes two "
            "round trips to the database (snapshot, reserve) plus its decision-log commit, "
            "each a context switch to a PostgreSQL backend on that core; `sync` also waits "
            "for the disk's fsync (the machine line gives its p50/p99). Where `sync` and "
            "`async` are about equal, fsync is not what limits the row: CPU and the "
            "round trips are."
        )
    out.append("")
    out += throughput_rows(rows, order, ["p99 (last round)", "bad answers", "fallbacks"],
                           lambda last, mine, fb, bad: [fmt_s(last["p99_us"] / 1e6), str(bad), str(fb)])
    out += cpu_rows(rows, order, "the bench reads its threads' time on a CPU "
                    "(`/proc/PID/task/*/schedstat`) right before and after wrk's run")
    return "\n".join(out) + "\n"


def store_cell(target):
    """The `[store]` column of a throughput row: what the target changed, "–" for
    the servers that are not cardgate."""
    return VARIANTS.get(target) or PG_VARIANTS.get(target, "–")


def throughput_rows(rows, order, extra_heads, extra):
    """A table of req/s and ratio to the same round's baseline per round, a row per
    target in `order` that ran; `extra(last, mine, fallbacks, bad)` gives the
    cells under `extra_heads` (last: the target's last round)."""
    rounds = sorted({r["round"] for r in rows})
    by = {(r["target"], r["round"]): r for r in rows}
    head = "| server (one core) | `[store]` |" + "".join(f" round {r} req/s | ratio |" for r in rounds)
    out = [head + "".join(f" {h} |" for h in extra_heads),
           "|---|---|" + "---|---|" * len(rounds) + "---|" * len(extra_heads)]
    for t in order:
        mine = [by.get((t, r)) for r in rounds]
        if not any(mine):
            continue
        cells = ""
        for r, m in zip(rounds, mine):
            b = by.get(("baseline", r))
            if not m:
                cells += " – | – |"
                continue
            ratio = f"{m['rps'] / b['rps']:.2f}" if b and t not in ("baseline", "nginx") else "–"
            cells += f" {m['rps']:,.0f} | {ratio} |"
        last = [m for m in mine if m][-1]
        fbs = [m.get("fallbacks") for m in mine if m and m.get("fallbacks") is not None]
        fb = sum(fbs) if fbs else "–"
        bad = sum((m or {}).get("bad", 0) + (m or {}).get("errors", 0) for m in mine)
        out.append(f"| {t} | {store_cell(t)} |{cells}" + "".join(f" {c} |" for c in extra(last, mine, fb, bad)))
    return out


def max_table(results_path, machine_path, command):
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    machine = open(machine_path).read().strip()
    out = [f"Measured by `{command}` on {machine}.", ""]
    out.append(
        "`examples/loadgen.rs --rate max` (closed loop: each of 32 keep-alive connections "
        "sends its next request when its last one is answered; one thread) pinned to one "
        "core, the server pinned to the other, every server in the same run, each "
        "started fresh with an empty data directory; 1 s warm-up, then "
        f"{rows[0].get('duration', '5 s') if rows else '5 s'}. The events "
        "(`load-tests/wrk_events.py jsonl`, signed before each run) are sent in order, so "
        "with as many as the run needs every request to cardgate `async` and `sync` is a "
        "distinct approval that holds funds; `re-sent` counts measured requests that had "
        "to repeat an event because the file ran out (nginx, the baseline and store off "
        "cycle over 20,000: nothing is held there). Every cardgate answer must be a 200 "
        "decision. nginx answering a constant and the baseline show the generator's "
        "ceiling: it drives them faster than wrk does. Ratio = req/s ÷ the bare hyper "
        "baseline's in the same round. Client p99 counts from sending (a closed loop "
        "has no schedule)."
    )
    out.append("")
    order = ["nginx", "baseline", "cardgate-nostore", "cardgate-async", "cardgate"]
    out += throughput_rows(rows, order, ["client p99 (last round)", "re-sent (last round)", "bad + errors", "fallbacks"],
                           lambda last, mine, fb, bad: [fmt_s(last["p99_us"] / 1e6),
                                                        f"{last['resent']:,} of {last['answered']:,}"
                                                        if last["target"].startswith("cardgate") else "–",
                                                        str(bad), str(fb)])
    out += cpu_rows(rows, order, "`loadgen --server-pid` reads its threads' time on a CPU "
                    "(`/proc/PID/task/*/schedstat`) at the start and the end of the measured part")
    return "\n".join(out) + "\n"


def cpu_rows(rows, order, how):
    """The same runs by the server's own CPU time (`how` it was read): how busy its
    core was and what a request cost it, and that cost against the baseline's;
    nothing when no run measured it."""
    rows = [r for r in rows if r.get("server_cpu_us") is not None and r["answered"]]
    if not rows:
        return []
    rounds = sorted({r["round"] for r in rows})
    by = {(r["target"], r["round"]): r for r in rows}
    per = {k: r["server_cpu_us"] / r["answered"] for k, r in by.items()}
    out = ["",
           f"The same runs by the server's own CPU time: {how}. `busy` is that time ÷ the wall time (1.00: its core never "
           "idle); below 1.00 the server waited for requests, so the generator (or the "
           "hand-off between the two cores) was the limit and req/s above understates what "
           "the server can do. CPU per request = that time ÷ the requests answered, and "
           "CPU ratio = the baseline's CPU per request ÷ this server's: the ratio of the two "
           "servers' throughputs if each had its core to itself and cost what it costs here. "
           "Packets the server receives are processed on the sender's core (loopback), the "
           "same for every server. A server that is less busy pays more wake-ups per request, "
           "so an idle-heavy baseline's CPU per request is if anything too high, and with it "
           "the CPU ratios.",
           "",
           "| server (one core) | `[store]` |" + "".join(f" round {r} busy | CPU per request | CPU ratio |" for r in rounds),
           "|---|---|" + "---|---|---|" * len(rounds)]
    for t in order:
        if not any((t, r) in by for r in rounds):
            continue
        cells = ""
        for r in rounds:
            if (t, r) not in by:
                cells += " – | – | – |"
                continue
            base = per.get(("baseline", r))
            ratio = f"{base / per[(t, r)]:.2f}" if base and t not in ("baseline", "nginx") else "–"
            cells += f" {by[(t, r)]['server_busy']:.2f} | {per[(t, r)]:.1f} µs | {ratio} |"
        out.append(f"| {t} | {store_cell(t)} |{cells}")
    return out


def callgrind_table(results_path, machine_path, command):
    rows = {(r["target"], r.get("conns", 1)): r
            for r in (json.loads(l) for l in open(results_path) if l.strip())}
    machine = open(machine_path).read().strip()
    out = [f"Measured by `{command}` on {machine}.", ""]
    out.append(
        "Each server runs under `valgrind --tool=callgrind` twice, answering N₁ and then "
        "N₂ signed webhook requests; instructions per request = (Ir(N₂) − Ir(N₁)) ÷ "
        "(N₂ − N₁), every thread counted (the store's writer included), start-up and "
        "shutdown cancelled out (and the metrics clock's start-up calibration, "
        "`quanta::Clock::new`, left out: it runs for a time, not a number of "
        "instructions; under fat LTO it is inlined into its once-cell's "
        "initialisation, so every one-off initialisation is left out, which both "
        "runs make). With 1 connection the requests go one after another, "
        "so every decision commits alone: the store's worst case. With 32 (as wrk "
        "sends) they arrive together and the writer commits them in batches, as under "
        "load. Instruction counts do not depend on the machine's load, except through "
        "the batch sizes at 32 connections (how many decisions arrive while the writer "
        "commits or, in `async`, gathers for 0.5 ms): run it on a quiet box. valgrind does not emulate SHA-NI, so under callgrind the webhook's "
        "HMAC-SHA256 runs software rounds that a SHA-NI CPU does in a few instructions "
        "per block: the SHA-256 column is that share, and the last column leaves it out."
    )
    out.append("")
    out.append("| server | `[store]` | connections | N₁ / N₂ | Ir per request | of which SHA-256 rounds "
               "| minus baseline | minus baseline, without SHA-256 |")
    out.append("|---|---|---|---|---|---|---|---|")
    conns = sorted({c for _, c in rows})
    for c in conns:
        base = rows.get(("baseline", c))
        for t in ["baseline", "cardgate-nostore", "cardgate-async", "cardgate"]:
            r = rows.get((t, c))
            if not r:
                continue
            sha = r.get("sha", 0)
            diff = f"{r['ir'] - base['ir']:,.0f}" if base and t != "baseline" else "–"
            diff2 = (f"{r['ir'] - sha - base['ir'] + base.get('sha', 0):,.0f}"
                     if base and t != "baseline" else "–")
            out.append(f"| {t} | {VARIANTS.get(t, '–')} | {c} | {r['n1']} / {r['n2']} | {r['ir']:,.0f} "
                       f"| {sha:,.0f} | {diff} | {diff2} |")
    costs = []
    for c in conns:
        off = rows.get(("cardgate-nostore", c))
        for t, name in (("cardgate", "sync"), ("cardgate-async", "async")):
            on = rows.get((t, c))
            if off and on:
                costs.append(f"{name} {on['ir'] - off['ir']:,.0f} Ir at {c} connection{'s' if c > 1 else ''}")
    if costs:
        out.append("")
        out.append("Store cost per decision (store on − store off): " + "; ".join(costs) + ".")
    return "\n".join(out) + "\n"


def fixed_table(results_path, machine_path, command, fsync_p99_ms):
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    machine = open(machine_path).read().strip()
    fsync = float(fsync_p99_ms) / 1e3
    r0 = rows[0] if rows else {}
    out = [f"Measured by `{command}` on {machine}.", ""]
    out.append(
        "`examples/loadgen.rs` (one thread, pinned to one core, the server pinned to the "
        f"other) offers each server a fixed rate over {r0.get('connections', 32)} keep-alive "
        "connections, open loop: request k is due at k/R whatever has been answered, and "
        "its latency counts from when it was due, so a stall shows as latency instead "
        "of slowing the offered load (no coordinated omission). The rate is 50 % of the "
        f"server's own round-1 maximum in the same run (the \"of\" figure), from "
        f"{'the closed loop over distinct events (the max part: the same kind of requests as here)' if r0.get('max_from', 'wrk') != 'wrk' else 'wrk (whose re-sent events hold nothing, so for `async` and `sync` it is above what distinct approvals sustain)'}. "
        "Each server is "
        f"started fresh and warmed up by a {r0.get('warmup', '1s')} loadgen run; then "
        f"`/metrics` is scraped, the measured run lasts {r0.get('duration', '10s')}, and "
        "`/metrics` is scraped again. Server percentiles are cardgate's own "
        "`cardgate_webhook_duration_seconds` (from the handler's start, once the request's "
        "headers are parsed, to its answer being built) between the two scrapes, linear "
        "inside a bucket (the first bucket ends at 50 µs; the bounds near the targets are "
        "0.75, 1, 1.5 and 2 ms). Time a request waits for the server's one core (behind "
        "its store threads or the kernel's writes) shows only in the client percentiles, "
        "loadgen's, from each request's due time to the end of its answer. Every request "
        "carries a distinct event signed before the run "
        "(`load-tests/wrk_events.py jsonl`; each is an approval that holds funds: no "
        "spending limit is reached), every answer must be a 200 decision, "
        "`late` counts requests that left more than 1 ms after they were due. "
        "The last column is `cardgate_store_commit_duration_seconds` over the same "
        "window: one group commit of the store's writer, its WAL fsync included, which "
        "an approval in `sync` waits for (behind the commit already running). "
        f"Targets (issue 19): p99 < 1 ms with the store off and with `async`; with "
        f"`sync`, p99 < the disk's fsync p99 measured in this run ({fmt_s(fsync)}, "
        f"the machine line) + 0.5 ms = {fmt_s(fsync + 0.5e-3)}."
    )
    if any(r.get("cycled") for r in rows):
        out.append("")
        out.append(
            "Rows marked † needed more events than the bench generates per run: "
            "loadgen cycled over them, and a repeated event is an idempotent replay "
            "(cheaper than a new decision)."
        )
    out.append("")
    out.append(
        "| server | `[store]` | offered req/s (50 % of its max) | achieved | server p50 "
        "| server p99 | client p99 (from scheduled time) | target | met? | bad / errors "
        "| late | fallbacks | store commit p50 / p99 |"
    )
    out.append("|" + "---|" * 13)
    cardgates = ["cardgate-nostore", "cardgate-async", "cardgate"]

    def cardgates_first(r):
        return cardgates.index(r["target"]) if r["target"] in cardgates else len(cardgates)

    for r in sorted(rows, key=cardgates_first):
        t = r["target"]
        server = r.get("server") or {}
        p99 = server.get("p99")
        if t in cardgates:
            limit = fsync + 0.5e-3 if t == "cardgate" else 1e-3
            target = f"p99 < {fmt_s(limit)}"
            if p99 is None:
                met = "–"
            elif p99 < limit:
                met = "yes"
            else:
                met = f"no (+{fmt_s(p99 - limit)})"
            offered = f"{r['offered']:,.0f} (of {r['max_rps']:,.0f})"
        else:
            target, met = "generator check", "–"
            offered = f"{r['offered']:,.0f}"
        fb = "–" if r.get("fallbacks") is None else f"{r['fallbacks']}"
        mark = " †" if r.get("cycled") else ""
        c = r.get("commit") or {}
        commit = f"{fmt_s(c.get('p50'))} / {fmt_s(c.get('p99'))}" if c.get("count") else "–"
        out.append(
            f"| {t}{mark} | {VARIANTS.get(t, '–')} | {offered} | {r['achieved']:,.0f} "
            f"| {fmt_s(server.get('p50'))} | {fmt_s(p99)} | {fmt_s(r['p99_us'] / 1e6)} "
            f"| {target} | {met} | {r['bad']} / {r['errors']} | {r['late']} | {fb} "
            f"| {commit} |"
        )
    cpu = [r for r in rows if r.get("server_cpu_us") is not None and r["answered"]]
    if cpu:
        # At a fixed rate a request costs more than at the maximum: fewer requests
        # share each wake-up, and `sync`'s commits (an fsync each) carry fewer.
        said = "; ".join(
            f"{r['target']} {r['server_cpu_us'] / r['answered']:.1f} µs (busy {r['server_busy']:.2f})"
            for r in sorted(cpu, key=cardgates_first))
        out.append("")
        out.append(
            "The server's own CPU time per request over the measured run (`loadgen "
            "--server-pid`: its threads' time on a CPU ÷ the requests answered; busy = "
            f"that time ÷ the wall time): {said}. Compare it with the max part's CPU per "
            "request: at half load each request pays for more wake-ups, and in `sync` for "
            "more commits."
        )
    for r in rows:
        f = r.get("fsync_beside")
        p99 = (r.get("server") or {}).get("p99")
        if not f or p99 is None:
            continue
        limit = f["p99"] + 0.5e-3
        out.append("")
        out.append(
            f"The disk under {r['target']}'s load: a second run of it at the same rate, right "
            f"after the measured one, with `load-tests/fsync_probe.py` beside it (8 KiB "
            f"write + fsync every 10 ms in its data directory's file system, {f['n']} times): "
            f"fsync p50 {fmt_s(f['p50'])}, p99 {fmt_s(f['p99'])}, max {fmt_s(f['max'])}, against "
            f"{fmt_s(fsync)} idle. Against that floor, p99 < {fmt_s(limit)}: "
            + ("within it." if p99 < limit else f"missed by {fmt_s(p99 - limit)}.")
            + " The target column keeps the idle floor, as issue 19 states it."
        )
    checks = [r for r in rows if r["target"] not in cardgates]
    if checks:
        out.append("")
        said = "; ".join(
            f"{r['target']} {r['achieved']:,.0f} of {r['offered']:,.0f} req/s "
            f"(client p99 {fmt_s(r['p99_us'] / 1e6)}, {r['late']} late)" for r in checks)
        # Keeping up is the rate and the schedule: requests that left late mean the
        # generator, or the box under it, could not send them when due.
        keeps_up = all(r["achieved"] >= 0.99 * r["offered"] and r["bad"] + r["errors"] == 0
                       and r["late"] <= 0.01 * max(r["sent"], 1) for r in checks)
        out.append(
            f"Generator check at the highest rate offered above: {said}: "
            + ("the generator keeps up." if keeps_up
               else "the generator, or the box under it, fell behind (more than 1 % late, "
                    "or short of the rate): the rows above are suspect too.")
        )
    return "\n".join(out) + "\n"


def main():
    cmd = sys.argv[1]
    if cmd == "hist":
        print(json.dumps(quantiles(buckets(sys.argv[2], sys.argv[4]), buckets(sys.argv[3], sys.argv[4]))))
    elif cmd == "k6":
        print(json.dumps(k6(sys.argv[2])))
    elif cmd == "table":
        sys.stdout.write(table(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "criterion":
        sys.stdout.write(criterion(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "wrk":
        sys.stdout.write(wrk_table(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "max":
        sys.stdout.write(max_table(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "callgrind":
        sys.stdout.write(callgrind_table(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif cmd == "fixed":
        sys.stdout.write(fixed_table(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]))
    elif cmd == "splice":
        splice(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

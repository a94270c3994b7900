#!/usr/bin/env python3
"""Pre-signed `issuing_authorization.request` events for wrk, loadgen and the callgrind client.

    wrk_events.py lua   N SECRET OUT.lua    a Lua table `events` of {body, signature}
    wrk_events.py jsonl N SECRET OUT.jsonl  one JSON object {"body", "signature"} a line,
                                            for examples/loadgen.rs
    wrk_events.py send  N SECRET URL [C]    POST the N events over C keep-alive
                                            connections at once (default 1: one after
                                            the other); exit 1 on any answer that is
                                            not a 200 decision
    wrk_events.py mix   N SECRET OUT.jsonl  a program's traffic as Stripe sends it: for
                                            each of N authorizations its request, then
                                            (8 authorizations later) its
                                            `issuing_authorization.created` and (16
                                            later) its capture, `issuing_transaction.created`
                                            (~3N lines; for loadgen --no-check: a
                                            lifecycle event's answer is no decision)

Signing is done here, once, so the load generator spends its CPU on HTTP only. The
events are the bundled fixture with distinct event and authorization ids spread over
50 cardholders (one card each; `WRK_EVENTS_CARDS=K` for K, e.g. as many as events for
a card never seen before in every request), amounts 1.00–60.00 under a cardholder limit
no run reaches (every distinct event is an approval that holds funds), all signed with
the current time (cardgate refuses signatures older than `webhook.tolerance_seconds`, 300 s by
default, so generate right before each run).
"""
import hashlib
import hmac
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "tests/fixtures/events"
FIXTURE = FIXTURES / "issuing_authorization.request.json"


def events(n, secret):
    """Yields N (body, signature) pairs, the event ids numbered 0..N-1.

    One copy of the fixture is changed in place for each event (every field it sets
    is set again for the next): a fresh copy per event made `jsonl` for the
    loadgen's 100,000+ events take minutes.
    """
    ev = json.loads(FIXTURE.read_text())
    rng = random.Random(1234)
    now = int(time.time())
    run = f"{now}"
    ev["created"] = now
    obj = ev["data"]["object"]
    obj["created"] = now
    cardholder_is_id = isinstance(obj.get("cardholder"), str)
    # The fixture's cardholder has a monthly limit of $5,000. At ~$30 an event, 50
    # cardholders reached it after ~8,200 approvals, and every later event was a
    # `spending_limit` decline, which holds nothing: a fixed-rate `sync` run then
    # measured declines that wait for no commit. The limit stays (the ledger still
    # computes the month's spend for it), raised past what any run can spend.
    for limit in obj["card"]["cardholder"]["spending_controls"]["spending_limits"]:
        limit["amount"] = 5_000_000_000
    cards = int(os.environ.get("WRK_EVENTS_CARDS", "50"))
    for i in range(n):
        ev["id"] = f"evt_bench_{run}_{i}"
        holder = i % cards
        obj["id"] = f"iauth_bench_{run}_{i}"
        obj["card"]["id"] = f"ic_bench_{holder}"
        obj["card"]["cardholder"]["id"] = f"ich_bench_{holder}"
        if cardholder_is_id:
            obj["cardholder"] = f"ich_bench_{holder}"
        amount = rng.randrange(100, 6000)
        obj["pending_request"]["amount"] = amount
        obj["pending_request"]["merchant_amount"] = amount
        body = json.dumps(ev, separators=(",", ":"))
        mac = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        yield body, f"t={now},v1={mac}"


def mix(n, secret, path):
    """The `mix` command: each request of `events`, its authorization's `created`
    event and its capture, the lifecycle events lagging so that each follows its
    request as Stripe's do (after the answer)."""
    created = json.loads((FIXTURES / "issuing_authorization.created.json").read_text())
    capture = json.loads((FIXTURES / "issuing_transaction.created.json").read_text())
    now = int(time.time())
    cards = int(os.environ.get("WRK_EVENTS_CARDS", "50"))
    for e in (created, capture):
        e["created"] = now
        e["data"]["object"]["created"] = now

    def line(ev):
        body = json.dumps(ev, separators=(",", ":"))
        mac = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        return json.dumps({"body": body, "signature": f"t={now},v1={mac}"}, separators=(",", ":"))

    # Request i's authorization is `iauth_…_i` of cardholder i % cards (as `events`
    # numbers them); the lifecycle events name the same ids and amount.
    def created_line(i, auth, amount):
        holder = i % cards
        created["id"] = f"evt_mix_{now}_created_{i}"
        o = created["data"]["object"]
        o["id"] = auth
        o["card"]["id"] = f"ic_bench_{holder}"
        o["card"]["cardholder"]["id"] = f"ich_bench_{holder}"
        o["cardholder"] = f"ich_bench_{holder}"
        o["amount"] = o["merchant_amount"] = amount
        for r in o["request_history"]:
            r["amount"] = r["merchant_amount"] = amount
        return line(created)

    def capture_line(i, auth, amount):
        holder = i % cards
        capture["id"] = f"evt_mix_{now}_capture_{i}"
        t = capture["data"]["object"]
        t["id"] = f"ipi_mix_{now}_{i}"
        t["authorization"] = auth
        t["card"] = f"ic_bench_{holder}"
        t["cardholder"] = f"ich_bench_{holder}"
        t["amount"] = t["merchant_amount"] = -amount
        return line(capture)

    auths = []
    with open(path, "w") as f:
        for i, (body, sig) in enumerate(events(n, secret)):
            request = json.loads(body)["data"]["object"]
            auths.append((request["id"], request["pending_request"]["amount"]))
            f.write(json.dumps({"body": body, "signature": sig}, separators=(",", ":")) + "\n")
            if i >= 8:
                f.write(created_line(i - 8, *auths[i - 8]) + "\n")
            if i >= 16:
                f.write(capture_line(i - 16, *auths[i - 16]) + "\n")


def long_string(s):
    level = 1
    while f"]{'=' * level}]" in s:
        level += 1
    eq = "=" * level
    return f"[{eq}[{s}]{eq}]"


def lua(n, secret, path):
    with open(path, "w") as f:
        f.write("events = {\n")
        for body, sig in events(n, secret):
            f.write(f"  {{{long_string(body)}, {long_string(sig)}}},\n")
        f.write("}\n")


def jsonl(n, secret, path):
    with open(path, "w") as f:
        for body, sig in events(n, secret):
            f.write(json.dumps({"body": body, "signature": sig}, separators=(",", ":")))
            f.write("\n")


def send(n, secret, url, connections=1):
    u = urllib.parse.urlparse(url)
    signed = list(events(n, secret))
    bad = [0] * connections

    def post(k):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        for body, sig in signed[k::connections]:
            conn.request("POST", "/webhooks/stripe", body=body,
                         headers={"Content-Type": "application/json", "Stripe-Signature": sig})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200 or b'"approved"' not in answer:
                bad[k] += 1
        conn.close()

    # Several connections let the store batch decisions as it does under load.
    threads = [threading.Thread(target=post, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(bad):
        sys.exit(f"{sum(bad)} of {n} answers were not 200 decisions")


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in ("lua", "jsonl", "send", "mix") \
            or (sys.argv[1] != "send" and len(sys.argv) != 5):
        sys.exit(__doc__)
    cmd, n, secret, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if cmd == "lua":
        lua(n, secret, dest)
    elif cmd == "jsonl":
        jsonl(n, secret, dest)
    elif cmd == "mix":
        mix(n, secret, dest)
    else:
        send(n, secret, dest, int(sys.argv[5]) if len(sys.argv) == 6 else 1)


if __name__ == "__main__":
    main()

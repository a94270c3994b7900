#!/usr/bin/env python3
"""Pre-signed `issuing_authorization.request` events for wrk and the callgrind client.

    wrk_events.py lua  N SECRET OUT.lua   a Lua table `events` of {body, signature}
    wrk_events.py send N SECRET URL       POST the N events one after the other on one
                                          keep-alive connection; exit 1 on any answer
                                          that is not a 200 decision

Signing is done here, once, so the load generator spends its CPU on HTTP only. The
events are the bundled fixture with distinct event and authorization ids spread over
50 cardholders (one card each), amounts 1.00–60.00, all signed with the current
time (cardgate refuses signatures older than `webhook.tolerance_seconds`, 300 s by
default, so generate right before each run).
"""
import hashlib
import hmac
import http.client
import json
import random
import sys
import time
import urllib.parse
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/events/issuing_authorization.request.json"


def events(n, secret):
    template = json.loads(FIXTURE.read_text())
    rng = random.Random(1234)
    now = int(time.time())
    run = f"{now}"
    out = []
    for i in range(n):
        ev = json.loads(json.dumps(template))
        ev["id"] = f"evt_bench_{run}_{i}"
        ev["created"] = now
        obj = ev["data"]["object"]
        holder = i % 50
        obj["id"] = f"iauth_bench_{run}_{i}"
        obj["created"] = now
        obj["card"]["id"] = f"ic_bench_{holder}"
        obj["card"]["cardholder"]["id"] = f"ich_bench_{holder}"
        obj["cardholder"] = f"ich_bench_{holder}" if isinstance(obj.get("cardholder"), str) else obj.get("cardholder")
        amount = rng.randrange(100, 6000)
        obj["pending_request"]["amount"] = amount
        obj["pending_request"]["merchant_amount"] = amount
        body = json.dumps(ev, separators=(",", ":"))
        mac = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
        out.append((body, f"t={now},v1={mac}"))
    return out


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


def send(n, secret, url):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    bad = 0
    for body, sig in events(n, secret):
        conn.request("POST", "/webhooks/stripe", body=body,
                     headers={"Content-Type": "application/json", "Stripe-Signature": sig})
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200 or b'"approved"' not in answer:
            bad += 1
    conn.close()
    if bad:
        sys.exit(f"{bad} of {n} answers were not 200 decisions")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("lua", "send"):
        sys.exit(__doc__)
    cmd, n, secret, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    (lua if cmd == "lua" else send)(n, secret, dest)


if __name__ == "__main__":
    main()

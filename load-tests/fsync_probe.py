#!/usr/bin/env python3
"""What a durable write costs on the disk under DIR: 8 KiB written, then fsync, timed.

    fsync_probe.py DIR --count N             N fsyncs back to back (the idle floor
                                             the bench's machine line gives)
    fsync_probe.py DIR --seconds S --gap-ms G
                                             one fsync every G ms for S seconds,
                                             beside whatever else writes to the disk
                                             (the bench runs it beside sync's
                                             fixed-rate run)

Prints one JSON line: {"n", "p50", "p99", "max"} in seconds. The file it writes is
removed afterwards.
"""

import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--count", type=int, help="fsyncs back to back")
    ap.add_argument("--seconds", type=float, help="probe for this long")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="pause between fsyncs with --seconds")
    args = ap.parse_args()
    if (args.count is None) == (args.seconds is None):
        ap.error("give one of --count and --seconds")
    path = os.path.join(args.dir, "fsync.probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    block, lat = os.urandom(8192), []
    end = time.monotonic() + (args.seconds or 0)
    try:
        i = 0
        while (i < args.count) if args.count is not None else (time.monotonic() < end):
            os.pwrite(fd, block, (i % 16) * 8192)
            t = time.perf_counter()
            os.fsync(fd)
            lat.append(time.perf_counter() - t)
            i += 1
            if args.seconds is not None:
                time.sleep(args.gap_ms / 1e3)
    finally:
        os.close(fd)
        os.unlink(path)
    if not lat:
        raise SystemExit("fsync_probe.py: no fsync timed")
    lat.sort()
    n = len(lat)
    # Nearest rank.
    pick = lambda q: lat[min(n - 1, max(0, -(-n * q // 100) - 1))]
    print(json.dumps({"n": n, "p50": pick(50), "p99": pick(99), "max": lat[-1]}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""store_variant.py OUT KEY VALUE: writes config/cardgate.toml to OUT with
`KEY = ...` under its [store] section set to VALUE (TOML, e.g. '"async"' or
false). Fails if the section or the key is not found, so a renamed setting cannot
silently benchmark the default. Used by scripts/bench and scripts/ab; run from the
repository's root."""
import re
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    out, key, value = sys.argv[1:]
    text = open("config/cardgate.toml").read()
    head, sep, rest = text.partition("\n[store]\n")
    store, nxt, tail = rest.partition("\n[")
    store, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", store, count=1, flags=re.M)
    if not sep or n != 1:
        sys.exit(f"config/cardgate.toml: no [store] {key} to vary")
    open(out, "w").write(head + sep + store + nxt + tail)


if __name__ == "__main__":
    main()

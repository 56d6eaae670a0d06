#!/usr/bin/env python3
"""The shared library exports exactly the functions include/kvring.h declares,
and libkvring.map names each of them: no internal function leaks out, and no
public one is missing from either.

usage: exports.py LIBKVRING_SO KVRING_H LIBKVRING_MAP
"""

import re
import subprocess
import sys


def header_functions(path: str) -> set[str]:
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)  # comments
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.M)  # preprocessor lines
    # A declaration: a return type, the name, then its parameter list.
    return set(re.findall(r"[\w\s\*]\b(kvr_\w+)\s*\([^;{)]*[^;{]*\)\s*;", text))


def exported(path: str) -> set[str]:
    out = subprocess.run(
        ["nm", "-D", "--defined-only", path], check=True, capture_output=True, text=True
    ).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWiu":
            names.add(parts[2].split("@")[0])
    return names


def mapped(path: str) -> set[str]:
    text = re.sub(r"/\*.*?\*/", " ", open(path, encoding="utf-8").read(), flags=re.S)
    glob = re.search(r"global:(.*?)local:", text, flags=re.S)
    if not glob:
        sys.exit(f"{path}: no global: ... local: section")
    return set(re.findall(r"\b(kvr_\w+)\s*;", glob.group(1)))


def main() -> int:
    so, header, mapfile = sys.argv[1:4]
    want, have, listed = header_functions(header), exported(so), mapped(mapfile)
    maptext = re.sub(r"/\*.*?\*/", " ", open(mapfile, encoding="utf-8").read(), flags=re.S)
    if "*" in maptext.split("local:")[0]:
        print(f"{mapfile}: the global section must name symbols, not match a pattern")
        return 1
    bad = False
    for what, names in (
        ("exported but not declared in kvring.h", have - want),
        ("declared in kvring.h but not exported", want - have),
        ("declared in kvring.h but not in the map", want - listed),
        ("in the map but not declared in kvring.h", listed - want),
    ):
        if names:
            bad = True
            print(f"{what}: {' '.join(sorted(names))}")
    if not want:
        print(f"{header}: no function found")
        return 1
    if not bad:
        print(f"exports: the {len(want)} functions of kvring.h, no more")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

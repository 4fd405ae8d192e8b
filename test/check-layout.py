#!/usr/bin/env python3
"""The layout of src/ is its architecture: check it still holds.

Each folder is a layer, named for the process that runs its code, and may
use only the folders listed for it below.  Fails (exit 1) when
  - a file includes a header of a folder it may not use, or names one of
    our headers without its folder;
  - built objects (if any) call a function of a folder they may not use,
    or two files call each other, directly or round a longer circle;
  - a C file lacks its opening comment or runs past MAX_LINES lines, or a
    folder its README.md;
  - a header in src/common/ shadows one of PostgreSQL's "common/" headers.
Usage: check-layout.py [repository root]
"""
import collections
import glob
import os
import re
import subprocess
import sys

MAY_USE = {
    "common": {"common"},
    "shmem": {"shmem", "common"},
    "client": {"client", "shmem", "common"},
    "functions": {"functions", "client", "shmem", "common"},
    "executor": {"executor", "client", "shmem", "common"},
    "httpworker": {"httpworker", "shmem", "common"},
    "dbworker": {"dbworker", "client", "shmem", "common"},
    "": set(),  # src/claude.c, _PG_init: may use every folder
}
MAX_LINES = 650

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
src = os.path.join(root, "src")
problems = []


def folder_of(path):
    rel = os.path.relpath(path, src)
    return os.path.dirname(rel)


def allowed(frm, to):
    return frm == "" or to in MAY_USE.get(frm, set())


files = sorted(glob.glob(os.path.join(src, "*.[ch]")) +
               glob.glob(os.path.join(src, "*", "*.[ch]")))
ours = {os.path.relpath(f, src) for f in files}
for d in MAY_USE:
    if d and not os.path.exists(os.path.join(src, d, "README.md")):
        problems.append(f"src/{d}/: no README.md saying what it owns and may call")
for f in files:
    if folder_of(f) not in MAY_USE:
        problems.append(f"{os.path.relpath(f, root)}: folder not in the map")

# includes
for f in files:
    rel = os.path.relpath(f, src)
    with open(f, encoding="utf-8") as fh:
        text = fh.read()
    for m in re.finditer(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
        inc = m.group(1)
        if "/" not in inc:
            if any(os.path.basename(o) == inc for o in ours):
                problems.append(f"src/{rel}: includes \"{inc}\" without its folder")
            continue
        top = inc.split("/")[0]
        if inc in ours and not allowed(folder_of(f), top):
            problems.append(f"src/{rel}: includes \"{inc}\", a folder "
                            f"{folder_of(f)}/ may not use")
    if rel.endswith(".c"):
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"src/{rel}: {lines} lines, more than {MAX_LINES}")
        if not text.startswith("/*\n * " + os.path.basename(rel) + "\n"):
            problems.append(f"src/{rel}: does not open with its comment")

# our common/ must not hide PostgreSQL's
try:
    incdir = subprocess.run(["pg_config", "--includedir-server"],
                            capture_output=True, text=True).stdout.strip()
except OSError:
    incdir = ""
if incdir:
    for h in glob.glob(os.path.join(src, "common", "*.h")):
        if os.path.exists(os.path.join(incdir, "common", os.path.basename(h))):
            problems.append(f"src/common/{os.path.basename(h)} shadows "
                            "PostgreSQL's header of that name")

# calls, from the symbols of built objects
objs = sorted(glob.glob(os.path.join(src, "*.o")) +
              glob.glob(os.path.join(src, "*", "*.o")))
defs, uses = {}, collections.defaultdict(set)
for o in objs:
    out = subprocess.run(["nm", o], capture_output=True, text=True).stdout
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "TDBRC":
            defs[p[2]] = o
        elif len(p) == 2 and p[0] == "U":
            uses[o].add(p[1])
calls = collections.defaultdict(set)
for o, syms in uses.items():
    for s in syms:
        d = defs.get(s)
        if d and d != o:
            calls[o].add(d)
            if not allowed(folder_of(o), folder_of(d)):
                problems.append(f"{os.path.relpath(o, src)[:-2]}.c calls {s} "
                                f"of {os.path.relpath(d, src)[:-2]}.c, a folder "
                                f"{folder_of(o)}/ may not use")

# circles of files: strongly connected components (Tarjan)
index, low, stack, on, n = {}, {}, [], set(), [0]


def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in calls.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            names = sorted(os.path.relpath(c, src)[:-2] + ".c" for c in comp)
            problems.append("files that call each other: " + ", ".join(names))


sys.setrecursionlimit(10000)
for v in list(calls):
    if v not in index:
        visit(v)

for p in problems:
    print("check-layout:", p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-layout: {len(files)} files, {len(objs)} objects, "
      f"{sum(len(c) for c in calls.values())} file-to-file calls: "
      "no call up a layer, no circle")

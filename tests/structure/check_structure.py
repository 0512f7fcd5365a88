#!/usr/bin/env python3
"""check_structure.py - the shape rules of docs/architecture.md, checked on the built objects.

  1. No circles between files: file A -> file B when an object of A uses a global symbol
     that B defines (nm). Any strongly connected set of more than one file is an error.
  2. No module uses a module above it: the module of every edge must be allowed by the
     dependency table below (the same graph CMake links; a wrong include also fails to link,
     this names the file and symbol).
  3. No folder holds more than --max-share of the project's C code (tests/ excluded: it
     mirrors every module).

Usage: check_structure.py BUILD_DIR SOURCE_DIR [--max-share 0.20]
Prints one line per finding and exits 1 if there is any.
"""
import os
import re
import subprocess
import sys
from collections import defaultdict

# module -> modules it may use (transitively closed below). Mirrors docs/architecture.md.
ALLOWED = {
    "common": [],
    "trace": ["common"],
    "device": ["common"],
    "partition": ["common"],
    "model": ["device", "partition", "common"],
    "data": ["partition", "common"],
    "collectives": ["trace", "partition", "common"],
    "optimizer": ["common"],
    "ckpt": ["trace", "partition", "common"],
    "engine": ["trace", "model", "device", "data", "partition", "collectives", "optimizer", "ckpt", "common"],
    "sim": ["engine", "trace", "model", "device", "data", "partition", "collectives", "optimizer", "ckpt", "common"],
    "daemon": ["engine", "trace", "model", "device", "data", "partition", "collectives", "optimizer", "ckpt", "common"],
    "bench": ["daemon", "engine", "trace", "model", "device", "data", "partition", "collectives", "optimizer", "ckpt",
              "common"],
    "cli": ["bench", "sim", "daemon", "engine", "trace", "model", "device", "data", "partition", "collectives", "optimizer",
            "ckpt", "common"],
}


def closure(m, seen=None):
    seen = set() if seen is None else seen
    for d in ALLOWED.get(m, []):
        if d not in seen:
            seen.add(d)
            closure(d, seen)
    return seen


def objects(build, src):
    """(module, source path relative to the module, object path) for every module object whose source
    still exists (a build directory keeps the objects of deleted files)."""
    out = []
    for mod in ALLOWED:
        d = os.path.join(build, mod, "CMakeFiles")
        if not os.path.isdir(d):
            continue
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith(".c.o") and os.path.exists(os.path.join(src, mod, f[:-2])):
                    out.append((mod, f[:-2], os.path.join(root, f)))
    return out


def nm(path):
    """(defined globals, undefined) of one object."""
    r = subprocess.run(["nm", "-P", path], capture_output=True, text=True, check=True)
    defined, undefined = set(), set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in "TDBRCGSVW" and not name.startswith("."):
            defined.add(name)
    return defined, undefined


def sccs(nodes, edges):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def code_lines(src):
    per = defaultdict(int)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        top = rel.split(os.sep)[0]
        if rel != "." and (top.startswith(".") or top.startswith("build") or top in ("tests", "docs")):
            dirs[:] = []
            continue
        for f in files:
            if re.search(r"\.(c|h)$", f):
                with open(os.path.join(root, f), errors="replace") as fh:
                    per[top if top != "." else "(top)"] += sum(1 for _ in fh)
    return per


def selftest():
    """The checker must find what it looks for: two files that call each other, a module that uses one
    above it, an oversized folder. Builds them with cc in a temporary tree."""
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        srcs = {
            "ckpt/a.c": "int b(void); int a(void) { return b(); }",
            "ckpt/b.c": "int a(void); int b(void) { return a() + 1; }",
            "common/c.c": "int d(void); int c(void) { return d(); }",
            "daemon/d.c": "int d(void) { return 4; }",
        }
        for rel, text in srcs.items():
            mod, name = rel.split("/")
            os.makedirs(os.path.join(t, "src", mod), exist_ok=True)
            with open(os.path.join(t, "src", rel), "w") as f:
                f.write(text + "\n" * 50)
            objdir = os.path.join(t, "build", mod, "CMakeFiles", f"yk_{mod}.dir")
            os.makedirs(objdir, exist_ok=True)
            subprocess.run(["cc", "-c", os.path.join(t, "src", rel), "-o", os.path.join(objdir, name + ".o")],
                           check=True)
        r = subprocess.run([sys.executable, __file__, os.path.join(t, "build"), os.path.join(t, "src")],
                           capture_output=True, text=True)
        out = r.stdout
        ok = (r.returncode == 1 and "circle between files ckpt/a.c, ckpt/b.c" in out
              and "upward use: common/c.c (common) uses d from daemon/d.c" in out and "folder ckpt/" in out)
        print(out, end="")
        print("selftest:", "ok" if ok else "FAILED")
        return 0 if ok else 1


def main():
    args = sys.argv[1:]
    if args == ["--selftest"]:
        return selftest()
    share = 0.20
    if "--max-share" in args:
        i = args.index("--max-share")
        share = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__)
        return 2
    build, src = args
    objs = objects(build, src)
    if not objs:
        print(f"no module objects under {build}: build first")
        return 2
    owner, uses, modof = {}, {}, {}
    for mod, name, path in objs:
        key = f"{mod}/{name}"
        d, u = nm(path)
        modof[key] = mod
        uses[key] = u
        for s in d:
            owner.setdefault(s, key)
    edges = defaultdict(set)
    why = {}
    findings = []
    for f, us in uses.items():
        for s in us:
            g = owner.get(s)
            if g is None or g == f:
                continue
            edges[f].add(g)
            why.setdefault((f, g), s)
            mf, mg = modof[f], modof[g]
            if mf != mg and mg not in closure(mf):
                findings.append(f"upward use: {f} ({mf}) uses {s} from {g} ({mg}); {mf} may only use "
                                f"{', '.join(sorted(closure(mf))) or 'nothing'}")
    for comp in sccs(sorted(uses), edges):
        if len(comp) > 1:
            comp = sorted(comp)
            links = [f"{a} -> {b} ({why[(a, b)]})" for a in comp for b in comp if (a, b) in why]
            findings.append(f"circle between files {', '.join(comp)}: " + "; ".join(links))
    per = code_lines(src)
    total = sum(per.values())
    for top, n in sorted(per.items(), key=lambda x: -x[1]):
        if total and n / total > share:
            findings.append(f"folder {top}/ holds {n} of {total} lines of C ({100 * n / total:.0f}%), "
                            f"above {100 * share:.0f}%: split it")
    for line in findings:
        print(line)
    nfiles = len(uses)
    nedges = sum(len(v) for v in edges.values())
    biggest = max(per.items(), key=lambda x: x[1]) if per else ("-", 0)
    print(f"structure: {nfiles} files, {nedges} file dependencies, largest folder {biggest[0]}/ "
          f"{100 * biggest[1] / max(total, 1):.0f}% of {total} lines; {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

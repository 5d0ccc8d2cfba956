#!/usr/bin/env python3
"""Lists import circles among the Rust modules of each crate: groups of modules that
import one another, directly or through others. Exits 1 if there is any.

    python3 tools/import_circles.py [REPO_ROOT]

An edge A -> B is a `crate::`, `super::` or `self::` path in A that names module B,
or a `mod b;` declaration in A (a parent reaches its children). Only code before a
file's first `#[cfg(test)]` counts: tests may import what they test. The answer is
every strongly connected group of more than one file (Tarjan), not only the cycles
a depth-first walk happens to meet. tests/module_graph.rs runs it on src/ and
core/src/ in `make test`, and checks that it finds a circle made on purpose.
"""
import os
import re
import sys

CRATES = ("src", "core/src")
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
MOD = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;", re.M)


def rust_files(src):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs if f.endswith(".rs"))


def module_file(src, parts):
    """The file of the longest prefix of `parts` that is a module (the rest names items)."""
    for n in range(len(parts), 0, -1):
        base = os.path.join(src, *parts[:n])
        for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
            if os.path.exists(candidate):
                return candidate
    return None


def graph(src):
    edges = {}
    for f in rust_files(src):
        own = os.path.relpath(f, src)[:-3].split(os.sep)
        if own[-1] in ("mod", "lib", "main"):
            own = own[:-1]
        with open(f, encoding="utf-8") as fh:
            code = fh.read().split("#[cfg(test)]")[0]
        targets = set()
        for m in PATH.finditer(code):
            parts = m.group(2).strip(":").split("::")
            if m.group(1) == "super":
                parts = own[:-1] + parts
            elif m.group(1) == "self":
                parts = own + parts
            target = module_file(src, parts)
            if target and target != f:
                targets.add(target)
        for m in MOD.finditer(code):
            target = module_file(src, own + [m.group(1)])
            if target and target != f:
                targets.add(target)
        edges[f] = targets
    return edges


def circular_groups(edges):
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    found = 0
    for crate in CRATES:
        src = os.path.join(root, crate)
        if not os.path.isdir(src):
            continue
        edges = graph(src)
        groups = circular_groups(edges)
        print(f"{crate}: {len(edges)} files, {sum(map(len, edges.values()))} imports, "
              f"{len(groups)} circular groups")
        for g in groups:
            print("  circle: " + " ".join(os.path.relpath(f, root) for f in g))
        found += len(groups)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The import graph of src/ must have no cycle, apart from a module and its own children.

Every `crate::a::b` and `super::x` path in a file (in `use` lines and inline) is an arrow from that
file to the top-level module the path names (`load/postgres.rs` using `crate::db::Pool` is an arrow
from `load` to `db`). Arrows inside one top-level module (`load` and `load::postgres`, or two of its
children) are left out: a parent and its children are one unit. The arrows between top-level modules
must form no cycle; every cycle is printed with the files whose paths close it, and the script exits
1. Run by `make test`; `--graph` prints the modules lowest layer first.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[: -len(".rs")]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        # Line comments (doc comments included) name modules in prose, not imports.
        stripped = re.sub(r"//.*$", "", line)
        lines.append(stripped)
    text = "\n".join(lines)
    # String literals can mention `crate::` too (messages, SQL); blank them.
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand(prefix, body):
    """Expands `a::{b, c::{d, e}}` into full paths."""
    out = []
    depth, start, items = 0, 0, []
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    for item in items:
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^([\w:]*?)(?:::)?\{(.*)\}$", item, flags=re.S)
        if m:
            head = [p for p in m.group(1).split("::") if p]
            out.extend(expand(prefix + head, m.group(2)))
        else:
            item = re.split(r"\s+as\s+", item)[0]
            out.append(prefix + [p for p in item.split("::") if p])
    return out


def paths_in(text, here):
    found = []
    for m in re.finditer(r"\buse\s+(crate|super)::([^;]*);", text, flags=re.S):
        root = ["crate"] if m.group(1) == "crate" else ["super"]
        found.extend(expand(root, m.group(2)))
    for m in re.finditer(r"(?<![\w:$])(crate|super)((?:::\w+)+)", text):
        found.append([m.group(1)] + [p for p in m.group(2).split("::") if p])
    resolved = []
    for p in found:
        if p[0] == "crate":
            resolved.append(p[1:])
        else:
            base = list(here)
            rest = list(p)
            while rest and rest[0] == "super":
                base = base[:-1]
                rest = rest[1:]
            resolved.append(base + rest)
    return resolved


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(path)] = path
    modules = set(files)
    edges, sources = {}, {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        for p in paths_in(text, mod):
            target = None
            for n in range(len(p), 0, -1):
                if tuple(p[:n]) in modules:
                    target = tuple(p[:n])
                    break
            if target is None or not mod or target[0] == mod[0]:
                continue
            edges.setdefault(mod[:1], set()).add(target[:1])
            sources.setdefault((mod[:1], target[:1]), set()).add(files[mod][len(SRC) + 1 :])
    # A module and its own children are one node: the top-level module.
    modules = {m[:1] for m in modules if m}

    # Strongly connected components (Tarjan).
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)

    name = lambda m: "::".join(m) or "crate"
    cycles = [c for c in comps if len(c) > 1]
    if "--graph" in sys.argv:
        # Tarjan emits components in reverse topological order: lowest layer first.
        for comp in comps:
            for m in sorted(comp):
                deps = ", ".join(sorted(name(t) for t in edges.get(m, ())))
                print(f"{name(m)} -> {deps}")
    if cycles:
        for comp in cycles:
            members = set(comp)
            print(f"import cycle through {len(comp)} modules: {', '.join(sorted(name(m) for m in comp))}")
            for m in sorted(comp):
                for t in sorted(edges.get(m, ())):
                    if t in members:
                        used_by = ", ".join(sorted(sources[(m, t)]))
                        print(f"  {name(m)} -> {name(t)}: in {used_by}")
        print("imports must point down (see ARCHITECTURE.md): move the shared item to the lower module")
        return 1
    print(f"import graph: {len(modules)} modules, {sum(len(e) for e in edges.values())} arrows, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())

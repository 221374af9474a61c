#!/usr/bin/env python3
"""Prints the dependency graph of provider/src's top-level modules and fails on a cycle.

A module depends on another when its files name it: `crate::other`, `use crate::{other, ..}`, or
`super::other` from a module's direct children. Test code (`#[cfg(test)] mod tests { ... }` at
the end of a file) and the fuzz harness (`fuzz.rs`, which checks every module) are left out.
Data must flow one way (request -> plan -> fetch -> convert -> reply): a cycle means two modules
reach into each other.

    python3 scripts/module-graph.py          graph as "module -> dependencies", exit 1 on a cycle
    python3 scripts/module-graph.py --dot    the same as Graphviz dot

It also fails when a file of provider/src is longer than MAX_LINES (a module that long has more
than one job), except the fuzz harness, which is test code.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "provider" / "src"
SKIP = {"fuzz", "lib", "main"}
MAX_LINES = 800
LONG_ALLOWED = {"fuzz.rs": "the fuzz harness: compiled only for tests and cargo-fuzz"}


def modules() -> dict[str, list[Path]]:
    mods: dict[str, list[Path]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC)
        top = rel.parts[0].removesuffix(".rs")
        if top in SKIP:
            continue
        mods.setdefault(top, []).append(path)
    return mods


def without_tests(text: str) -> str:
    """The file without its test module and without comments (a doc link is no dependency)."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, flags=re.M)
    code = text[: cut.start()] if cut else text
    return re.sub(r"//[^\n]*", "", code)


def references(text: str, names: set[str]) -> set[str]:
    found = set(re.findall(r"\bcrate::(\w+)", text))
    # `crate::{a::x, b::{y, z}, c}`: the first path segment of each item at depth 0.
    for start in (m.end() for m in re.finditer(r"\bcrate::\{", text)):
        depth, item = 0, ""
        for ch in text[start:]:
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                found.add(item.strip().split("::")[0].strip())
                item = ""
                continue
            item += ch
        found.add(item.strip().split("::")[0].strip())
    return found & names


def graph() -> dict[str, set[str]]:
    mods = modules()
    names = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, paths in mods.items():
        for path in paths:
            text = without_tests(path.read_text())
            edges[module] |= references(text, names) - {module}
            # `super::x` names a top-level module from src/<module>.rs or src/<module>/mod.rs;
            # `super::super::x` does from src/<module>/<child>.rs.
            rel = path.relative_to(SRC)
            if len(rel.parts) == 2 and rel.parts[1] == "mod.rs":
                edges[module] |= set(re.findall(r"\bsuper::(\w+)", text)) & names - {module}
            if len(rel.parts) == 1:
                edges[module] |= set(re.findall(r"\bsuper::(\w+)", text)) & names - {module}
            if len(rel.parts) == 2 and rel.parts[1] != "mod.rs":
                edges[module] |= set(re.findall(r"\bsuper::super::(\w+)", text)) & names - {module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph provider {")
        for m in sorted(edges):
            for d in sorted(edges[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
    else:
        for m in sorted(edges):
            print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
    too_long = []
    for path in sorted(SRC.rglob("*.rs")):
        rel = str(path.relative_to(SRC))
        count = len(path.read_text().splitlines())
        if count > MAX_LINES and rel not in LONG_ALLOWED:
            too_long.append(f"{rel} ({count} lines)")
    for entry in too_long:
        print(f"TOO LONG (over {MAX_LINES} lines): provider/src/{entry}: split it by concern", file=sys.stderr)
    found = cycles(edges)
    for comp in found:
        # One path that closes the cycle, for the message.
        pairs = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print(f"CYCLE among {', '.join(comp)}: {'; '.join(pairs)}", file=sys.stderr)
    return 1 if found or too_long else 0


if __name__ == "__main__":
    sys.exit(main())

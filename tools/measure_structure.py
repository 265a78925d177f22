"""measure_structure: the structure figures issue 18's "Done means" asks for, printed as text.

Run from the repository root with the project's venv: ``.venv/bin/python tools/measure_structure.py``.
Module sizes, the import graph of worker/ (module-level and lazy imports) and its cycles, raw
protobuf uses outside worker/etcd, ``client: Any`` annotations, hand-written retry loops, retry
objects, and mypy's error count. ``duplicates`` pairs: run ``duplicates`` separately (printed last).
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "worker"


def modname(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            for a in node.names:
                found.add(f"{base}.{a.name}")
    return {m for m in found if m.startswith("worker")}


def main() -> None:
    files = sorted(PKG.rglob("*.py"))
    mods = {modname(f): f for f in files}
    print("== module sizes (lines) ==")
    total = 0
    for m, f in sorted(mods.items(), key=lambda kv: -len(kv[1].read_text().splitlines())):
        n = len(f.read_text().splitlines())
        total += n
        if n >= 150:
            print(f"{n:5d} {m}")
    print(f"{total:5d} total in {len(mods)} modules; >=300 lines: "
          f"{sum(1 for f in mods.values() if len(f.read_text().splitlines()) >= 300)}")
    # package-level import graph (worker.x.y -> worker.x) and module graph
    graph: dict[str, set[str]] = {}
    for m, f in mods.items():
        deps = set()
        for d in imports(f, m):
            while d and d not in mods:
                d = d.rpartition(".")[0]
            if d and d != m:
                deps.add(d)
        graph[m] = deps

    def package(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or (m in mods and mods[m].name == "__init__.py") else m

    pgraph: dict[str, set[str]] = {}
    for m, deps in graph.items():
        pm = package(m)
        pgraph.setdefault(pm, set()).update(package(d) for d in deps if package(d) != pm)
    print("== package import graph ==")
    for p in sorted(pgraph):
        print(f"{p} -> {', '.join(sorted(pgraph[p])) or '-'}")
    print("== import cycles between packages/top-level modules (strongly connected) ==")
    sccs = tarjan(pgraph)
    cyc = [s for s in sccs if len(s) > 1]
    for s in cyc:
        print("cycle:", " <-> ".join(sorted(s)))
    print(f"package cycles: {len(cyc)}")
    msccs = [s for s in tarjan(graph) if len(s) > 1]
    for s in msccs:
        print("module cycle:", " <-> ".join(sorted(s)))
    print(f"module cycles: {len(msccs)}")
    print("== raw protobuf outside worker/etcd ==")
    pat = re.compile(r"etcdrpc|auth_pb2|kv_pb2|\.header\.revision|response_range|response_txn|"
                     r"\bresponse_kvs\b|\._event\.kv|WhichOneof")
    raw = 0
    for m, f in mods.items():
        if m.startswith("worker.etcd"):
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pat.search(line):
                raw += 1
                print(f"  {f.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    print(f"raw protobuf uses outside worker/etcd: {raw}")
    anys = sum(len(re.findall(r"client\s*:\s*Any\b", f.read_text())) for f in mods.values())
    print(f"client: Any: {anys}")
    loops = 0
    for f in mods.values():
        text = f.read_text()
        loops += len(re.findall(r"attempt\s*\+=\s*1", text))
    inline = sum(len(re.findall(r"tenacity\.Retrying\(", f.read_text())) for f in mods.values())
    print(f"hand-written retry loops (attempt += 1): {loops}; inline tenacity.Retrying: {inline}")
    pol = sum(len(re.findall(r"RetryPolicy\(|Backoff\(|Retry\(", f.read_text())) for f in mods.values())
    print(f"retry objects constructed (RetryPolicy(/Backoff(/Retry(): {pol}")
    mypy = subprocess.run([str(ROOT / ".venv/bin/mypy"), "worker"], cwd=ROOT, capture_output=True, text=True)
    last = (mypy.stdout.strip().splitlines() or ["?"])[-1]
    print(f"mypy worker: {last}")
    ruff = subprocess.run([str(ROOT / ".venv/bin/ruff"), "check", "worker", "tests", "--statistics"], cwd=ROOT,
                          capture_output=True, text=True)
    print("ruff check:", (ruff.stdout.strip().splitlines() or ["clean"])[-1], f"(rc {ruff.returncode})")


def tarjan(graph: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The code's structure map: rooms (top-level modules of src/), the import
arrows between them, file-level import circles, and the largest files.

    python3 .ci/structure.py [src] [-v: room arrows] [-e: arrows in circles]

An arrow A -> B is any `crate::B` path (in a `use` or inline) in a file of
room A. Circles are strongly connected groups of files (a file is a module:
`x.rs` or `x/mod.rs`; `super::` and `self::` paths count too).
"""
import os, re, sys
from collections import defaultdict

ARGS = [a for a in sys.argv[1:] if not a.startswith("-")]
SRC = ARGS[0] if ARGS else "src"
files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[p] = open(p, encoding="utf-8").read()

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel

mods = {tuple(module_of(p)): p for p in files}

def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    # tests are not structure
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]

def resolve(parts):
    """The longest module prefix of `parts` that is a file."""
    for k in range(len(parts), 0, -1):
        if tuple(parts[:k]) in mods:
            return tuple(parts[:k])
    return None

path_re = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
group_re = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)

edges = defaultdict(set)
for p, text in files.items():
    me = tuple(module_of(p))
    body = strip(text)
    is_mod_file = p.endswith("mod.rs") or p.endswith("lib.rs")
    def base(kind):
        if kind == "crate":
            return []
        here = list(me) if is_mod_file else list(me[:-1])
        return here[:-1] if kind == "super" else here
    targets = []
    for m in path_re.finditer(body):
        parts = base(m.group(1)) + m.group(2).strip(":").split("::")
        targets.append(parts)
    for m in group_re.finditer(body):
        prefix = base(m.group(1)) + [x for x in m.group(2).split("::") if x]
        for item in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:::[A-Za-z_]\w*)*", m.group(3)):
            targets.append(prefix + [item])
    for parts in targets:
        t = resolve(parts)
        if t is not None and t != me and t != ():
            if me and t[: len(me)] == me:
                continue  # a module using its own children is not an arrow
            edges[me].add(t)

def room(m):
    return m[0] if m else "(root)"

room_edges = defaultdict(set)
for a, bs in edges.items():
    for b in bs:
        if room(a) != room(b) and a:
            room_edges[room(a)].add(room(b))

def sccs(nodes, adj):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(comp)
    for v in nodes:
        if v not in index:
            visit(v)
    return out

rooms = sorted({room(m) for m in mods if m})
n_arrows = sum(len(v) for v in room_edges.values())
file_circles = [c for c in sccs(list(mods), edges) if len(c) > 1]
room_circles = [c for c in sccs(rooms, room_edges) if len(c) > 1]
# Arrows running back up: inside a room, a child importing its parent
# (or a sibling importing the room's mod.rs); between rooms, an arrow in
# a room circle.
up = []
for a, bs in edges.items():
    for b in bs:
        if len(a) > 1 and b == a[:-1]:
            up.append((a, b))
in_room_circle = set()
for c in room_circles:
    s = set(c)
    for a in c:
        for b in room_edges[a]:
            if b in s:
                in_room_circle.add((a, b))
print(f"rooms: {len(rooms)}")
print(f"arrows between rooms: {n_arrows}")
print(f"arrows running back up (child -> its parent module): {len(up)}")
for a, b in sorted(up):
    print("   ", "/".join(a), "->", "/".join(b) or "(root)")
print(f"room circles: {len(room_circles)} (arrows inside them: {len(in_room_circle)})")
for c in room_circles:
    print("   ", " ".join(sorted(c)))
print(f"file circles: {len(file_circles)}")
for c in file_circles:
    print("   ", " ".join(sorted("/".join(m) for m in c)))
sizes = sorted(((len(t.splitlines()), p) for p, t in files.items()), reverse=True)
print("largest files:")
for n, p in sizes[:5]:
    print(f"    {n:5} {p}")
print(f"lines in src: {sum(len(t.splitlines()) for t in files.values())}")
if "-v" in sys.argv:
    for a in sorted(room_edges):
        print(a, "->", " ".join(sorted(room_edges[a])))
if "-e" in sys.argv:
    for a, bs in sorted(edges.items()):
        for b in sorted(bs):
            if room(a) != room(b) and a and (room(a), room(b)) in in_room_circle:
                print("   circle arrow:", "/".join(a), "->", "/".join(b))

#!/usr/bin/env python
"""Compare the machine code of two builds of the kernels, function by function.

A refactor that moves kernel code between files and renames it must leave the instructions alone; on a host
that cannot run some ISA paths (AVX-512 on an AVX2 machine) this is the evidence that they still work. Each
function of both binaries (unstripped .so or .o files) is disassembled with objdump, normalised (addresses of
jump targets inside the function become offsets from its start, calls and jumps out of it become <ext>,
RIP-relative displacements and address comments are dropped) and hashed. Every function of the old build is
then looked up in the new one by its instruction sequence, whatever its new name.

    python kernels/tools/compare_disasm.py OLD.so NEW.so [--only REGEX] [--show-diff NAME]

Prints each old function with the new function(s) holding the same instructions, or "CHANGED" and the most
similar new function of a like name; exits 1 if a function matched by --only changed.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import re
import subprocess
import sys
from collections import defaultdict

HEADER = re.compile(r"^([0-9a-f]+) <(.+)>:$")
INSN = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
TARGET = re.compile(r"^((?:\S+ )*?\S+)\s+([0-9a-f]+) <(.*)>$")
NOISE = ("pybind11::", "pybind11_", "std::", "__gnu_cxx", "_GLOBAL_", "__static_initialization", "__cxx_global",
         "PyInit_", "deregister_tm_clones", "register_tm_clones", "frame_dummy", "__do_global", "_init", "_fini")


def functions(path: str) -> dict[str, list[str]]:
    """name -> normalised instructions, for every function of a binary."""
    out = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", path], capture_output=True, text=True,
                         check=True).stdout
    raw: dict[str, list[tuple[int, str]]] = {}
    starts: dict[str, int] = {}
    cur = None
    for line in out.splitlines():
        h = HEADER.match(line)
        if h:
            cur = h.group(2)
            if cur in raw:  # the same name twice (internal-linkage copies from two files)
                cur += f" #{sum(n.split(' #')[0] == h.group(2) for n in raw) + 1}"
            starts[cur] = int(h.group(1), 16)
            raw[cur] = []
            continue
        m = INSN.match(line)
        if m and cur is not None:
            raw[cur].append((int(m.group(1), 16), m.group(2)))
    res = {}
    for name, insns in raw.items():
        if not insns:
            continue
        lo, hi = starts[name], insns[-1][0]
        body = []
        for _, text in insns:
            text = re.sub(r"\s+# .*$", "", text).strip()
            text = re.sub(r"-?0x[0-9a-f]+\(%rip\)", "X(%rip)", text)
            t = TARGET.match(text)
            if t:
                addr = int(t.group(2), 16)
                text = f"{t.group(1)} " + (f".+{addr - lo:#x}" if lo <= addr <= hi else "<ext>")
            text = re.sub(r"\s+", " ", text)
            body.append(text)
        while body and (body[-1].startswith(("nop", "cs nop", "data16", "xchg %ax,%ax")) or body[-1] == "int3"):
            body.pop()  # alignment padding up to the next function
        res[name] = body
    return res


def interesting(name: str) -> bool:
    return not any(n in name for n in NOISE) and "@plt" not in name and not name.startswith(".")


def short(name: str) -> str:
    """A name without namespaces, argument list and clone suffix, for pairing functions that changed."""
    name = re.sub(r" \[clone [^\]]*\]", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # drop the argument list (the last top-level parenthesis)
        if ch == "(" and depth == 0:
            cut = i
        depth += ch in "<("
        depth -= ch in ">)"
    base = name[:cut]
    return re.sub(r"^.*::", "", re.sub(r"<.*>", "", base))


def digest(body: list[str]) -> str:
    return hashlib.sha1("\n".join(body).encode()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", nargs="+", help="old build: .so or .o files, then --new")
    ap.add_argument("--new", nargs="+", required=True, help="new build: .so or .o files")
    ap.add_argument("--only", default=".*", help="regex: check only old functions whose name matches")
    ap.add_argument("--show-diff", default=None, help="print a unified diff for old functions matching this regex")
    a = ap.parse_args()
    old: dict[str, list[str]] = {}
    new: dict[str, list[str]] = {}
    for p in a.old:
        old.update(functions(p))
    for p in a.new:
        new.update(functions(p))
    by_hash = defaultdict(list)
    for name, body in new.items():
        by_hash[digest(body)].append(name)
    only = re.compile(a.only)
    same = changed = 0
    for name in sorted(n for n in old if interesting(n) and only.search(n)):
        body = old[name]
        hits = by_hash.get(digest(body))
        if hits:
            same += 1
            print(f"same     {len(body):5d} insns  {name}\n           -> {', '.join(sorted(hits)[:3])}")
            continue
        changed += 1
        cands = [n for n in new if short(n) == short(name)] or list(new)
        best = max(cands, key=lambda n: difflib.SequenceMatcher(None, body, new[n], autojunk=False).ratio()
                   if abs(len(new[n]) - len(body)) < max(50, len(body)) else 0.0)
        ratio = difflib.SequenceMatcher(None, body, new[best], autojunk=False).ratio()
        print(f"CHANGED  {len(body):5d} insns  {name}\n           ~  {best} ({len(new[best])} insns, similarity {ratio:.3f})")
        if a.show_diff and re.search(a.show_diff, name):
            sys.stdout.writelines(difflib.unified_diff([x + "\n" for x in body], [x + "\n" for x in new[best]],
                                                       "old", "new", n=2))
    print(f"\n{same} functions with identical instructions, {changed} changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())

"""One-off: write the ownership prefix through catalog.PREFIX instead of the literal "cnib"."""
import io
import re
import sys
import tokenize
import pathlib

LIB = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "lib/cnibench")
LIT = re.compile(r"cnib(?!ench)")


def rewrite(tok: str) -> str | None:
    m = re.match(r"([rRbBfF]*)('''|\"\"\"|'|\")", tok)
    prefix, quote = m.group(1).lower(), m.group(2)
    if len(quote) == 3 or "b" in prefix or not LIT.search(tok):
        return None
    body = tok[len(m.group(1)) + len(quote):-len(quote)]
    if "f" not in prefix:
        body = body.replace("{", "{{").replace("}", "}}")
    body = LIT.sub("{PREFIX}", body)
    return ("r" if "r" in prefix else "") + "f" + quote + body + quote


for path in sorted(LIB.rglob("*.py")):
    if path.name == "catalog.py":
        continue
    src = path.read_text()
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    lines = src.splitlines(keepends=True)
    edits = []
    for t in toks:
        if t.type == tokenize.STRING and t.start[0] == t.end[0]:
            new = rewrite(t.string)
            if new:
                edits.append((t.start, t.end, new))
    if not edits:
        continue
    for (r, c0), (_, c1), new in reversed(edits):
        line = lines[r - 1]
        lines[r - 1] = line[:c0] + new + line[c1:]
    out = "".join(lines)
    rel = path.relative_to(LIB)
    dots = "." * len(rel.parts)
    if not re.search(r"^from \.+catalog import .*\bPREFIX\b", out, re.M):
        # after the last top-level import of the module header
        imp = f"from {dots}catalog import PREFIX\n"
        m = list(re.finditer(r"^(from \S+ import (\([^)]*\)|[^\n]*)|import [^\n]*)\n", out, re.M))
        at = m[-1].end() if m else 0
        head = [x for x in m if x.start() < out.find("\ndef ") and x.start() < out.find("\nclass ") if True]
        at = (head[-1].end() if head else at)
        out = out[:at] + imp + out[at:]
    path.write_text(out)
    print(path, len(edits))

"""Apply issue 12's renames (one meaning per name) to code written before them, e.g. a branch merged after.

    .venv/bin/python scripts/issue12_renames.py [ROOT]      # ROOT: a checkout (default: this one)

Mechanical and idempotent: a NAME token is renamed only where it means the renamed class (the module that
defines it, or a ``from X import Old`` whose X is, or re-exports, that module; ``module.Old`` through such
a module), strings equal to the old name only inside files that import or define it (``__all__``). Docstrings
and comments are left alone; the script prints the lines that still say an old name, to read by hand.
Afterwards: ``ruff check --fix`` (import order, sorted ``__all__``), then ruff, mypy and the tests.
Delete this script once no branch predates the renames.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

#: (module that defines the class, old name, new name)
RENAMES: list[tuple[str, str, str]] = [
    ("isthmus.netplan.planning", "Plan", "NetworkPlan"),
    ("isthmus.rollout.steps", "Plan", "RolloutPlan"),
    ("isthmus.operator.status", "Phase", "StatusPhase"),
    ("isthmus.rollout.progress", "Phase", "RolloutPhase"),
    ("isthmus.cqlguard.protocol.connection", "Phase", "ConnectionPhase"),
    ("isthmus.cqlguard.guard", "Step", "Disposition"),
    ("isthmus.rollout.gates", "Verdict", "GateVerdict"),
    ("isthmus.cqlguard.policy", "Verdict", "PolicyVerdict"),
    ("isthmus.cqlguard.policy", "Decision", "PolicyDecision"),
    ("isthmus.rollout.deciding", "Decision", "StepDecision"),
    ("isthmus.operator.rollup", "Outcome", "ReconcileOutcome"),
    ("isthmus.kube.applying", "Action", "ApplyAction"),
    ("isthmus.spec.policy", "Action", "CqlAction"),
    ("isthmus.lab.pki", "Authority", "PemAuthority"),
    ("isthmus.kube.preflight", "Check", "PreflightCheck"),
    ("isthmus.kube.preflight", "Severity", "PreflightSeverity"),
    ("isthmus.lab.dnsrecords", "Endpoint", "ServiceEndpoint"),
    ("isthmus.lab.dnsrecords", "Zone", "DnsZone"),
    ("isthmus.operator.metrics", "Health", "Probes"),
    ("isthmus.cli._app", "Output", "OutputFormat"),
    ("isthmus.lab.cli", "OutputFormat", "LabOutputFormat"),
    ("isthmus.lab.pods.runtime", "PodNetwork", "PodNetworkProvider"),
    ("isthmus.pictures.planmap", "Segment", "Span"),
]

#: Members renamed in place (values, which status and state store, unchanged).
MEMBERS = [(r"\bReach\.DONE\b", "Reach.REACHED"), (r"\bReach\.UNKNOWN\b", "Reach.UNREACHABLE")]

#: Modules moved or renamed: (old dotted prefix, new one), in imports.
MODULES = [("isthmus.observe", "isthmus.pictures")]

#: Names that moved to another module: (old module, name, new module).
MOVED = [
    ("isthmus.rollout.revisions", n, "isthmus.rollout.memberrevisions")
    for n in ("MemberRevision", "History", "history", "member_record_name", "member_revisions",
              "read_member_revision", "record_member_revision")
] + [("isthmus.rollout.rolling", "RolloutOptions", "isthmus.rollout.target")]


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = [p for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")]
        self.trees: dict[Path, ast.Module] = {}
        for p in self.files:
            try:
                self.trees[p] = ast.parse(p.read_text(encoding="utf-8"))
            except SyntaxError:
                print(f"SKIPPED (syntax) {p}")
        self.by_module = {self.module(p)[0]: p for p in self.trees}

    def module(self, p: Path) -> tuple[str, bool]:
        parts = list(p.relative_to(self.root).with_suffix("").parts)
        if parts[0] == "src":
            parts = parts[1:]
        package = parts[-1] == "__init__"
        return ".".join(parts[:-1] if package else parts), package

    def resolve(self, p: Path, node: ast.ImportFrom) -> str:
        name, package = self.module(p)
        if node.level == 0:
            return node.module or ""
        base = name.split(".") if package else name.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def origin(self, module: str, names: tuple[str, ...], seen: tuple[str, ...] = ()) -> str:
        """The module that defines one of ``names`` as seen from ``module`` (following re-exports)."""
        p = self.by_module.get(module)
        if p is None or module in seen:
            return module
        for node in ast.walk(self.trees[p]):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if a.name in names and (a.asname or a.name) == a.name:
                        return self.origin(self.resolve(p, node), names, (*seen, module))
        return module


def rename(tree: Tree, module: str, old: str, new: str) -> list[Path]:
    names = (old, new)
    changed = []
    for p, parsed in tree.trees.items():
        me = tree.module(p)[0]
        hit = me == module and any(isinstance(n, ast.ClassDef) and n.name in names for n in parsed.body)
        skip_lines: set[int] = set()  # `from x import Old as _Old` where x is not the module: another Old
        aliases: set[str] = set()
        for node in ast.walk(parsed):
            if isinstance(node, ast.ImportFrom):
                src = tree.resolve(p, node)
                for a in node.names:
                    if a.name == old and tree.origin(src, names) == module:
                        hit = True
                    elif a.name == old:
                        skip_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
                    elif a.name != "*":
                        sub = f"{src}.{a.name}"
                        if sub in tree.by_module and tree.origin(sub, names) == module:
                            aliases.add(a.asname or a.name)
        text = p.read_text(encoding="utf-8")
        edits = []
        before: list[str] = ["", ""]
        for t in tokenize.generate_tokens(io.StringIO(text).readline):
            s = t.string
            if t.type == tokenize.NAME and s == old and t.start[0] not in skip_lines:
                after_dot = before[1] == "."
                if (hit and not after_dot) or (after_dot and before[0] in aliases):
                    edits.append((t.start, t.end, new))
            elif t.type == tokenize.STRING and hit and s in (f'"{old}"', f"'{old}'"):
                edits.append((t.start, t.end, s.replace(old, new)))
            if t.type not in (tokenize.NL, tokenize.COMMENT):
                before = [before[1], s]
        if edits:
            lines = text.splitlines(keepends=True)
            for (row, col), (_, end), s in reversed(edits):
                line = lines[row - 1]
                lines[row - 1] = line[:col] + s + line[end:]
            p.write_text("".join(lines), encoding="utf-8")
            changed.append(p)
    return changed


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    touched: set[Path] = set()
    for old_mod, new_mod in MODULES:
        for p in [p for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")]:
            text = p.read_text(encoding="utf-8")
            rel_old = "." * 2 + old_mod.split(".")[-1]
            out = re.sub(rf"\b{re.escape(old_mod)}\b", new_mod, text)
            if p.is_relative_to(root / "src"):
                out = re.sub(rf"from {re.escape(rel_old)}\b", "from .." + new_mod.split(".")[-1], out)
            if out != text:
                p.write_text(out, encoding="utf-8")
                touched.add(p)
    for old_mod, name, new_mod in MOVED:
        for p in [p for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")]:
            text = p.read_text(encoding="utf-8")
            last = old_mod.split(".")[-1]
            pattern = rf"^(\s*from (?:{re.escape(old_mod)}|\.{last}) import )(.*\b{name}\b.*)$"
            if re.search(pattern, text, flags=re.M):
                print(f"MOVED {name}: {old_mod} -> {new_mod}: fix the import in {p.relative_to(root)}")
    for module, old, new in RENAMES:
        touched |= set(rename(Tree(root), module, old, new))
    for p in [p for d in ("src", "tests", "bench") for p in (root / d).rglob("*.py")]:
        text = p.read_text(encoding="utf-8")
        out = text
        for pattern, new in MEMBERS:
            out = re.sub(pattern, new, out)
        if out != text:
            p.write_text(out, encoding="utf-8")
            touched.add(p)
    for p in sorted(touched):
        print(f"CHANGED {p.relative_to(root)}")
    olds = ["Action", "Decision", "Phase", "Plan", "Verdict"]  # the old names no class keeps (the others stay)
    for p in sorted(touched):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(rf"\b({'|'.join(olds)})\b", line):
                print(f"READ {p.relative_to(root)}:{i}: {line.strip()[:120]}")


if __name__ == "__main__":
    main()

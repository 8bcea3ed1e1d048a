"""``lfs-bench``: the suite's command line (installed by ``pip install``).

    lfs-bench list                          tables, tiers, methods and datasets, one line each
    lfs-bench run TABLE [key=value ...]     = python benchmarks/run.py +table=TABLE [key=value ...]
    lfs-bench run-all [--analysis] [key=value ...]   every paper table (and the analysis tables), 2 at a time
    lfs-bench report [report.py options]    regenerate CSVs, Markdown tables and figures (runs/)
    lfs-bench check [report.py options]     your runs against the published cells / mini reference

Exit codes (the suite's convention): 0 success; 1 a failure at run time (a job failed, a
regression); 2 a usage or configuration error (an unknown table, a bad value), with one line
saying what to do.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CONF = HERE / "conf"
README = "README.md at the repository's root"


def _first_comment(path: Path, width: int = 100) -> str:
    """The first sentence of a YAML file's first comment block (Hydra's ``@package`` line skipped),
    cut at ``width`` characters."""
    block = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and "@package" not in line:
            block.append(line.lstrip("# ").strip())
        elif block:
            break
    text = " ".join(block)
    end = re.search(r"\.\s+(?=[A-Z])", text)  # a sentence's end ("Eq. 19" is not one)
    text = text if end is None else text[: end.start() + 1]
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def tables() -> dict[str, str]:
    return {p.stem: _first_comment(p) for p in sorted((CONF / "table").glob("*.yaml"))}


def usage() -> str:
    rows = "\n".join(f"  {name:<16} {what}" for name, what in tables().items())
    return (f"usage: lfs-bench {{list,run,run-all,report,check}} ...\n"
            f"       python benchmarks/run.py +table=NAME [tier=mini|smoke|full] [key=value ...]\n\n"
            f"tables:\n{rows}\n\n"
            f"lfs-bench list shows tiers, methods and datasets too; the README explains each table and "
            f"the two-command setup ({README}).")


def listing() -> str:
    from benchmarks import methods

    out = ["tables (lfs-bench run NAME, or python benchmarks/run.py +table=NAME):"]
    out += [f"  {n:<22} {d}" for n, d in tables().items()]
    out.append("tiers (tier=NAME):")
    out += [f"  {p.stem:<22} {_first_comment(p)}" for p in sorted((CONF / "tier").glob("*.yaml"))]
    out.append("methods (method=NAME; files in benchmarks/methods/):")
    out += [f"  {n:<22} {methods.get(n).description}" for n in methods.available()]
    out.append("datasets (dataset=NAME):")
    for p in sorted((CONF / "dataset").glob("*.yaml")):
        ds = yaml.safe_load(p.read_text())["dataset"]
        out.append(f"  {p.stem:<22} [{ds['protocol']}] {_first_comment(p)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "list":
        print(listing())
        return 0
    if cmd == "run":
        if not rest or rest[0].startswith("-") or "=" in rest[0]:
            print("error: lfs-bench run needs a table first: lfs-bench run TABLE [key=value ...]; tables: "
                  + ", ".join(tables()), file=sys.stderr)
            return 2
        if rest[0] not in tables():
            print(f"error: unknown table {rest[0]!r}; available: {', '.join(tables())}", file=sys.stderr)
            return 2
        return subprocess.call([sys.executable, str(HERE / "run.py"), f"+table={rest[0]}", *rest[1:]])
    if cmd == "run-all":
        from benchmarks import run_all

        return run_all.main(rest)
    if cmd in ("report", "check"):
        from benchmarks import report

        return report.main((["--check"] if cmd == "check" else []) + rest)
    print(f"error: unknown command {cmd!r}; use one of list, run, run-all, report, check (lfs-bench --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Every check CI runs, in one command: ``.venv/bin/python -m tests [options] [pytest arguments]``.

Steps, in order, each with this interpreter (the venv's ``sys.executable -m ...``) from the
repository root:

1. ``ruff check .`` (lint; settings in pyproject.toml's ``[tool.ruff]``)
2. ``ruff format --check .`` (formatting, checked only: nothing is rewritten)
3. ``mypy`` (files and strictness from pyproject.toml's ``[tool.mypy]``)
4. ``mkdocs build --strict`` (into a temporary directory, removed afterwards)
5. ``pytest`` with every remaining argument passed through unchanged

Every step runs even when an earlier one fails; a table of all results comes last, and
the exit status is 0 only when every step passed. Pytest's "no tests ran" (exit 5) is a
failure: a selection that matches nothing checks nothing.

Options, recognised only before the first pytest argument:

``--no-static``
    Skip steps 1-4 and run only pytest (quick runs while working on one thing).
``--``
    End of these options: everything after it goes to pytest as it is.
``-h``, ``--help``
    Print this text (``python -m tests -- --help`` shows pytest's own help).

Examples::

    .venv/bin/python -m tests                         # everything, as CI
    .venv/bin/python -m tests -x tests/unit           # static checks, then only tests/unit
    .venv/bin/python -m tests --no-static tests/unit -q
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_TESTS_RAN = 5  # pytest.ExitCode.NO_TESTS_COLLECTED


@dataclass
class Result:
    name: str
    returncode: int | None  # None: skipped (--no-static)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.returncode not in (0, None)

    @property
    def verdict(self) -> str:
        if self.returncode == 0:
            return "ok"
        if self.returncode is None:
            return "skipped"
        if self.name == "pytest" and self.returncode == NO_TESTS_RAN:
            return "FAILED (no tests ran)"
        if self.returncode < 0:
            return f"FAILED (signal {-self.returncode})"
        return f"FAILED (exit {self.returncode})"


def parse(argv: list[str]) -> tuple[bool, list[str]] | None:
    """(run the static steps?, pytest's arguments), or None when help was asked for."""
    static = True
    args = list(argv)
    while args:
        if args[0] == "--no-static":
            static = False
        elif args[0] in ("-h", "--help"):
            return None
        elif args[0] == "--":
            args.pop(0)
            break
        else:
            break
        args.pop(0)
    return static, args


def run(name: str, module: str, *args: str) -> Result:
    command = [sys.executable, "-m", module, *args]
    print(f"\n=== {name}: python {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    try:
        returncode = subprocess.run(command, cwd=ROOT).returncode
    except FileNotFoundError as exc:  # no interpreter at sys.executable: nothing can run
        print(exc, file=sys.stderr)
        returncode = 127
    return Result(name, returncode, time.monotonic() - started)


def report(results: list[Result]) -> None:
    rows = [(r.name, r.verdict, "" if r.returncode is None else f"{r.seconds:.1f} s") for r in results]
    header = ("step", "result", "time")
    width = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width, strict=True)).rstrip())


def main(argv: list[str]) -> int:
    parsed = parse(argv)
    if parsed is None:
        print(__doc__)
        return 0
    static, pytest_args = parsed
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="connecfy-site-") as site:
            steps = [
                ("ruff check", "ruff", ["check", "."]),
                ("ruff format", "ruff", ["format", "--check", "."]),
                ("mypy", "mypy", []),
                ("mkdocs build", "mkdocs", ["build", "--strict", "--site-dir", site]),
            ]
            for name, module, args in steps:
                results.append(run(name, module, *args) if static else Result(name, None))
        results.append(run("pytest", "pytest", *pytest_args))
    except KeyboardInterrupt:
        report(results)
        print("interrupted", file=sys.stderr)
        return 130
    report(results)
    failed = [r.name for r in results if r.failed]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Branch coverage of the whole program: run the suite once under coverage and judge it.

Run from the root of a checkout whose venv has the test extra, with that venv's Python:

    .venv/bin/python .ci/coverage_check.py

The suite runs as ``coverage run -m pytest``. pyproject.toml's ``[tool.coverage.run]``
makes every server the e2e tests start, every worker it forks and every master it
re-execs measure itself into its own data file (``parallel``, ``patch``), and
tests/harness.py stops each server with SIGQUIT under coverage so that they all save.
The files are then combined and the report printed: every module, the total, and the
modules under ``MODULE_FLOOR``.

The goal (issue 14, item 7) is at least 90 % for corral/ as a whole and no module under
75 %, in coverage.py's figure (statements and branches together, ``branch = true``).

Exit status 1 when:
- the total is under ``fail_under`` (pyproject.toml's [tool.coverage.report]: enforced,
  the code meets it with a margin), or
- a module is under ``MODULE_FLOOR`` while ``MODULE_FLOOR_ENFORCED`` (not yet: see there),
- or coverage.py is too old to measure the servers, or no data was collected.

A test that fails under coverage does not fail this check: the README's test command
has judged the suite already, and a run under a tracer is slower; the failure is printed
and the figure is the one measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import coverage

#: No module of corral/ should be under this figure.
MODULE_FLOOR = 75.0

#: Off: the whole-program run on Python 3.13 found two modules under the floor,
#: workers/filesend.py (33 %) and logs.py (74.8 %), and a floor the code does not meet
#: would only make CI red. tests/workers/test_filesend.py and tests/test_logs.py came
#: after that run; with their data added the two read 95.6 % and 98.3 %, which leaves
#: supervisor/sockets.py (75.5 %) and workers/privileges.py (75.8 %) the lowest, right at
#: the floor. Turn this on once a CI run of this step shows every module over it.
MODULE_FLOOR_ENFORCED = False

#: The first coverage.py with every ``patch`` that pyproject.toml asks for ("fork" is
#: 7.10.4's); an older one ignores the option and measures the test process only.
COVERAGE_MIN = (7, 10, 4)


def coverage_command(*args: str) -> int:
    """Run ``python -m coverage ARGS`` with this interpreter; return its exit status."""
    return subprocess.run([sys.executable, "-m", "coverage", *args], check=False).returncode


def under_floor(report: dict[str, dict[str, dict[str, float]]]) -> list[tuple[str, float]]:
    """The modules of a ``coverage json`` report under ``MODULE_FLOOR``, lowest first."""
    figures = [(name, data["summary"]["percent_covered"]) for name, data in report.items()]
    return sorted((item for item in figures if item[1] < MODULE_FLOOR), key=lambda i: i[1])


def main() -> int:
    started = time.monotonic()
    if coverage.version_info[:3] < COVERAGE_MIN:
        wanted = ".".join(map(str, COVERAGE_MIN))
        print(f"coverage {coverage.__version__} cannot measure the servers: {wanted} needed")
        return 1
    for stale in [*Path().glob(".coverage.*"), Path(".coverage")]:
        stale.unlink(missing_ok=True)
    pytest = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
    tests = coverage_command("run", *pytest)
    # Without --keep: the combined .coverage replaces the per-process files. A file that
    # a SIGKILL cut short mid-write is reported as "isn't a coverage data file" and left.
    if coverage_command("combine", "-q") != 0:
        print("coverage combine failed: no data")
        return 1
    # Exit status 2: the total is under fail_under (coverage prints by how much).
    total_ok = coverage_command("report", "--sort=cover") == 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        coverage_command("json", "-q", "--fail-under=0", "-o", str(out))
        report = json.loads(out.read_text())
    totals = report["totals"]
    covered, branches = totals["covered_branches"], totals["num_branches"]
    goal = coverage.Coverage().get_option("report:fail_under")
    print(
        f"\ncorral/ as a whole: {totals['percent_covered']:.1f}% (fail_under {goal});"
        f" branches alone {100 * covered / max(branches, 1):.1f}%, {covered}/{branches}"
    )
    low = under_floor(report["files"])
    enforced = "enforced" if MODULE_FLOOR_ENFORCED else "not enforced yet"
    print(f"modules under {MODULE_FLOOR:.0f}% ({enforced}): {len(low)}")
    for name, figure in low:
        print(f"  {figure:5.1f}%  {name}")
    if tests != 0:
        print(f"note: pytest under coverage exited with {tests} (see its summary above)")
    print(f"coverage step took {time.monotonic() - started:.0f}s")
    return 0 if total_ok and not (low and MODULE_FLOOR_ENFORCED) else 1


if __name__ == "__main__":
    sys.exit(main())

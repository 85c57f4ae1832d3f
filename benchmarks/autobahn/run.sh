#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client against corral's echo example (examples/ws_echo.py).
#
# Usage:
#   benchmarks/autobahn/run.sh [full|nodeflate|core]      (default: full)
#
# full      517 cases, compression (12.*, 13.*) included. ~19 min on an idle machine; the
#           test client, not the server, is the slow side. Not part of the CI test suite.
# nodeflate 301 cases, everything but compression, ~35 s.
# core      247 cases, also without the 9.* performance cases, ~10 s.
#
# Exits 0 when every case is OK, NON-STRICT or INFORMATIONAL (for both the behaviour and
# the closing behaviour), 1 otherwise, and prints the summary. The first run builds the
# testsuite's Python 2.7 environment under $AB_HOME (default /tmp/ab, ~1-2 min, needs
# PyPI and a CPython 2.7; see wstest.sh). The HTML report is in
# $AB_HOME/results/corral-<profile>/reports/servers/index.html.
#
# Env: CORRAL_PYTHON (default: the repo's .venv/bin/python, else python3), CORRAL_ARGS
# (extra server options, e.g. "--loop uvloop"), plus wstest.sh's AB_* knobs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PROFILE="${1:-full}"
PY="${CORRAL_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
export AB_HOME="${AB_HOME:-/tmp/ab}"
export AB_OUT="${AB_OUT:-$AB_HOME/results}"
export AB_SERVER_CWD="$ROOT" AB_SERVER_ENV_PATH=0

started=$SECONDS
"$HERE/wstest.sh" \
  "$PY -m corral examples.ws_echo:app --port {port} -w 1 --no-access-log ${CORRAL_ARGS:-}" \
  "$PROFILE" corral
echo "wall time: $((SECONDS - started)) s"

"$PY" - "$AB_OUT/corral-$PROFILE/reports/servers/index.json" <<'PYEOF'
import collections, json, sys

ALLOWED = {"OK", "NON-STRICT", "INFORMATIONAL"}
cases = json.load(open(sys.argv[1]))["corral"]
bad = {c: v for c, v in cases.items() if {v["behavior"], v["behaviorClose"]} - ALLOWED}
counts = collections.Counter(v["behavior"] for v in cases.values())
print("verdict:", len(cases), "cases;", ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
for case, v in sorted(bad.items()):
    print(f"  NOT ALLOWED {case}: {v['behavior']}/{v['behaviorClose']}")
sys.exit(1 if bad else 0)
PYEOF

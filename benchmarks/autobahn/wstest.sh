#!/usr/bin/env bash
# Autobahn|Testsuite (wstest -m fuzzingclient) against an ASGI WebSocket echo server.
# (The team's generic runner, kept as it is; run.sh beside it points it at corral.)
#
# Usage:
#   ./run.sh 'SERVER COMMAND with {port}' [full|core|nodeflate] [AGENT_NAME]
#   ./run.sh --setup                 # only build the environments
#   ./run.sh --summary REPORT_DIR... # re-print summaries of earlier runs
#
# Examples (the server runs with cwd = this folder and $AB_HOME/venv3/bin first on PATH,
# so echo_app:app resolves to ./echo_app.py; app:app is an alias of it):
#   ./run.sh 'uvicorn echo_app:app --port {port} --ws wsproto' core
#   ./run.sh 'uvicorn echo_app:app --port {port} --ws websockets' full uvicorn-websockets
#   ./run.sh 'hypercorn echo_app:app --bind 127.0.0.1:{port}' core
#
# Profiles:  full = "cases": ["*"]  (~517 cases incl. 9.* performance and 12.*/13.* deflate)
#            core = full minus 9.*, 12.*, 13.*           (247 cases, ~10 s)
#            nodeflate = full minus 12.*, 13.* (deflate)  (301 cases, ~30-60 s)
#            (full takes ~19 min here, ~18 of them in 12.*/13.*)
#
# Setup route: Autobahn|Testsuite is Python 2.7 code. Debian 12 has no python2.7 package,
# but this machine image ships CPython 2.7.18 under pyenv (~/.pyenv/versions/2.7.18).
# We make a py2.7 virtualenv with it (virtualenv 20.21.1, the last release that can
# still create 2.7 envs, run from a py3 helper venv) and pip-install the testsuite sdist
# plus its pinned dependency set (autobahn 0.10.9, Twisted 19.10.0, ...) from PyPI.
# Nothing is converted or vendored.
#
# Env knobs: AB_HOME (default /tmp/ab), AB_PY2 (path to a python2.7), AB_SERVER_CWD
# (default: this folder), AB_OUT (results root, default $AB_HOME/results),
# AB_TIMEOUT (seconds for the whole wstest run; default 900 core / 3600 full),
# AB_SERVER_ENV_PATH=0 to not prepend venv3/bin to PATH for the server.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AB_HOME="${AB_HOME:-/tmp/ab}"
AB_OUT="${AB_OUT:-$AB_HOME/results}"
PY3="${AB_PY3:-python3}"
TS_VERSION="25.10.1"
SETUP_STAMP_VERSION="1"   # bump when the pins below change

log() { printf '[run.sh] %s\n' "$*" >&2; }

# Full resolved py2 dependency set (autobahntestsuite's own pins from its
# egg-info/requires.txt, plus what pip resolved for them on 2.7).
write_py2_pins() {
  cat > "$AB_HOME/py2-constraints.txt" <<'EOF'
attrs==21.4.0
autobahn==0.10.9
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
cryptography==3.3.2
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
incremental==16.10.1
ipaddress==1.0.23
Jinja2==2.11.3
klein==17.10.0
linecache2==1.0.0
MarkupSafe==1.1.1
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
pyOpenSSL==19.1.0
service-identity==18.1.0
setuptools==44.0.0
six==1.16.0
traceback2==1.4.0
Twisted==19.10.0
txaio==2.1.0
typing==3.10.0.0
ujson==2.0.3
unittest2==1.1.0
Werkzeug==1.0.1
wsaccel==0.6.6
zope.interface==4.6.0
EOF
  # direct requirements (the sdist's requires.txt; its requirements.txt is missing
  # from the sdist, so `pip install autobahntestsuite` alone installs no deps)
  cat > "$AB_HOME/py2-requirements.txt" <<'EOF'
txaio==2.1.0
incremental==16.10.1
pyOpenSSL==19.1.0
cryptography==3.3.2
Twisted==19.10.0
zope.interface==4.6.0
jinja2==2.11.3
markupsafe==1.1.1
Werkzeug==1.0.1
klein==17.10.0
service_identity==18.1.0
unittest2==1.1.0
six==1.16.0
autobahn[accelerate,twisted]==0.10.9
EOF
}

find_py2() {
  if [[ -n "${AB_PY2:-}" ]]; then echo "$AB_PY2"; return; fi
  local c
  for c in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/2.7*/bin/python2.7 \
           "$HOME"/.pyenv/versions/2.7*/bin/python2.7 \
           "$(command -v python2.7 2>/dev/null || true)" \
           "$(command -v pypy 2>/dev/null || true)"; do
    if [[ -n "$c" && -x "$c" ]] && "$c" -c 'import sys,ssl,zlib; assert sys.version_info[0]==2' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  # last resort: a Debian package (bookworm has none, older/newer releases might)
  if command -v apt-get >/dev/null && apt-cache policy python2.7 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get install -y python2.7 >&2 && command -v python2.7 && return
  fi
  return 1
}

setup() {
  mkdir -p "$AB_HOME"
  local stamp="$AB_HOME/.setup-ok-v$SETUP_STAMP_VERSION"
  if [[ -f "$stamp" && -x "$AB_HOME/venv2/bin/wstest" && -x "$AB_HOME/venv3/bin/uvicorn" ]] \
     && "$AB_HOME/venv2/bin/python" -c 'import autobahntestsuite, autobahn, twisted' 2>/dev/null; then
    return 0
  fi
  log "setting up in $AB_HOME (one-off, ~2 min)"
  local py2
  py2="$(find_py2)" || { log "ERROR: no Python 2.7 interpreter found (set AB_PY2=/path/to/python2.7)"; exit 2; }
  log "python2: $py2 ($("$py2" -c 'import sys; print(sys.version.split()[0])'))"
  write_py2_pins

  # py3 helper venv holding a virtualenv that can still create 2.7 environments
  if [[ ! -x "$AB_HOME/venv-tools/bin/virtualenv" ]]; then
    "$PY3" -m venv "$AB_HOME/venv-tools"
    "$AB_HOME/venv-tools/bin/pip" install -q 'virtualenv==20.21.1' 2>&1 | grep -v 'neither a file nor a directory' >&2 || true
  fi
  if [[ ! -x "$AB_HOME/venv2/bin/python" ]]; then
    "$AB_HOME/venv-tools/bin/virtualenv" -q -p "$py2" "$AB_HOME/venv2" >&2
  fi
  "$AB_HOME/venv2/bin/pip" install -q --no-warn-script-location \
      -c "$AB_HOME/py2-constraints.txt" -r "$AB_HOME/py2-requirements.txt" \
      "autobahntestsuite==$TS_VERSION" 2>&1 \
      | grep -v -E 'neither a file nor a directory|DEPRECATION: Python 2.7' >&2 || true
  "$AB_HOME/venv2/bin/python" -c 'import autobahntestsuite, autobahn, twisted' \
      || { log "ERROR: py2 install failed"; exit 2; }

  # py3 venv with the reference servers
  if [[ ! -x "$AB_HOME/venv3/bin/python" ]]; then "$PY3" -m venv "$AB_HOME/venv3"; fi
  "$AB_HOME/venv3/bin/pip" install -q uvicorn wsproto websockets hypercorn 2>&1 \
      | grep -v 'neither a file nor a directory' >&2 || true
  "$AB_HOME/venv3/bin/python" -c 'import uvicorn, wsproto, websockets, hypercorn' \
      || { log "ERROR: py3 install failed"; exit 2; }
  touch "$stamp"
  log "setup done: $("$AB_HOME/venv2/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' ')"
}

summarize() {  # args: report dirs (each holding index.json)
  "$PY3" - "$@" <<'PYEOF'
import json, os, sys, collections
CATS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
rows = []
for d in sys.argv[1:]:
    idx = os.path.join(d, "index.json") if os.path.isdir(d) else d
    data = json.load(open(idx))
    for agent, cases in sorted(data.items()):
        b = collections.Counter(v["behavior"] for v in cases.values())
        bc = collections.Counter(v["behaviorClose"] for v in cases.values())
        def key(c): return [int(x) for x in c.split(".")]
        good = ("OK", "INFORMATIONAL")
        bad = sorted((c for c, v in cases.items() if v["behavior"] not in good or v["behaviorClose"] not in good), key=key)
        rows.append((agent, len(cases), b, bc, bad, cases))
for agent, n, b, bc, bad, cases in rows:
    if bad:
        print("%s: non-OK cases (behavior/behaviorClose):" % agent)
        groups = collections.OrderedDict()
        for c in bad:
            v = cases[c]
            groups.setdefault(c.split(".")[0], []).append("%s[%s/%s]" % (c, v["behavior"], v["behaviorClose"]))
        for g, lst in groups.items():
            print("  %s.*: %d  %s%s" % (g, len(lst), " ".join(lst[:12]), " ..." if len(lst) > 12 else ""))
print()
print("server close frames (remoteCloseCode over all cases; None = server sent no close frame, dropped TCP):")
for agent, n, b, bc, bad, cases in rows:
    cc = collections.Counter(str(v.get("remoteCloseCode")) for v in cases.values())
    print("  %-26s %s" % (agent, " ".join("%s:%d" % kv for kv in sorted(cc.items(), key=lambda kv: -kv[1]))))
print()
# extra categories (WRONG CODE, UNCLEAN, FAILED BY CLIENT, NO_CLOSE) get columns only when present
for title, idx in (("behavior", 2), ("behaviorClose", 3)):
    cats = CATS + sorted({k for r in rows for k in r[idx]} - set(CATS))
    print(title + ":")
    print("%-30s %5s " % ("agent", "cases") + " ".join("%13s" % c for c in cats))
    for r in rows:
        print("%-30s %5d " % (r[0], r[1]) + " ".join("%13d" % r[idx].get(c, 0) for c in cats))
PYEOF
}

free_port() { "$PY3" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {  # port timeout_s server_pid
  "$PY3" - "$1" "$2" "$3" <<'PYEOF'
import os, socket, sys, time
port, deadline, pid = int(sys.argv[1]), time.time() + float(sys.argv[2]), int(sys.argv[3])
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(2)  # server exited
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PYEOF
}

SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

main() {
  case "${1:-}" in
    ""|-h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --setup) setup; exit 0 ;;
    --summary) shift; summarize "$@"; exit 0 ;;
  esac
  local cmd_tmpl="$1" profile="${2:-core}" agent="${3:-}"
  [[ "$profile" =~ ^(full|core|nodeflate)$ ]] || { log "profile must be full, core or nodeflate"; exit 2; }
  if [[ -z "$agent" ]]; then
    agent="$(echo "$cmd_tmpl" | sed -E 's/\{port\}//g; s/--?(port|bind|host|log-level)[ =][^ ]*//g; s/[^ ]*:[^ ]*//g' \
             | tr -cs 'A-Za-z0-9' '-' | sed -E 's/^-+|-+$//g' | cut -c1-40)"
  fi
  [[ "$cmd_tmpl" == *"{port}"* ]] || { log "ERROR: the server command must contain {port}"; exit 2; }
  setup

  local port; port="${AB_PORT:-$(free_port)}"
  local cmd="${cmd_tmpl//\{port\}/$port}"
  local outdir="$AB_OUT/$agent-$profile"
  rm -rf "$outdir"; mkdir -p "$outdir"
  local excl='[]'
  [[ "$profile" == core ]] && excl='["9.*", "12.*", "13.*"]'
  [[ "$profile" == nodeflate ]] && excl='["12.*", "13.*"]'
  cat > "$outdir/spec.json" <<EOF
{
  "options": {"failByDrop": false},
  "outdir": "$outdir/reports/servers",
  "servers": [{"agent": "$agent", "url": "ws://127.0.0.1:$port"}],
  "cases": ["*"],
  "exclude-cases": $excl,
  "exclude-agent-cases": {}
}
EOF
  log "server: $cmd   (cwd ${AB_SERVER_CWD:-$HERE})"
  local path="$PATH"
  [[ "${AB_SERVER_ENV_PATH:-1}" != 0 ]] && path="$AB_HOME/venv3/bin:$PATH"
  ( cd "${AB_SERVER_CWD:-$HERE}" && PATH="$path" exec setsid bash -c "exec $cmd" ) \
      > "$outdir/server.log" 2>&1 &
  SERVER_PID=$!
  trap stop_server EXIT INT TERM
  if ! wait_port "$port" 30 "$SERVER_PID"; then
    log "ERROR: server exited or did not listen on 127.0.0.1:$port within 30s; log:"; tail -20 "$outdir/server.log" >&2; exit 3
  fi
  local tmo="${AB_TIMEOUT:-}"; [[ -z "$tmo" ]] && { [[ $profile == full ]] && tmo=3600 || tmo=900; }
  log "wstest fuzzingclient, profile=$profile agent=$agent port=$port (log: $outdir/wstest.log)"
  local t0=$SECONDS rc=0
  ( cd "$outdir" && timeout "$tmo" "$AB_HOME/venv2/bin/wstest" -m fuzzingclient -s spec.json ) \
      > "$outdir/wstest.log" 2>&1 || rc=$?
  local dt=$((SECONDS - t0))
  stop_server
  echo "$dt" > "$outdir/duration_s"
  if [[ ! -f "$outdir/reports/servers/index.json" ]]; then
    log "ERROR: no index.json (wstest rc=$rc); tail of wstest.log:"; tail -20 "$outdir/wstest.log" >&2; exit 4
  fi
  local versions
  versions="$("$AB_HOME/venv2/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' ')| $("$AB_HOME/venv3/bin/python" -c '
import importlib.metadata as m
print(" ".join("%s %s" % (p, m.version(p)) for p in ("uvicorn", "wsproto", "websockets", "hypercorn")))' 2>/dev/null || true)"
  printf '{"agent": "%s", "profile": "%s", "command": "%s", "duration_s": %s, "wstest_rc": %s, "versions": "%s"}\n' \
      "$agent" "$profile" "${cmd//\"/\\\"}" "$dt" "$rc" "$versions" > "$outdir/meta.json"
  log "wstest rc=$rc, ${dt}s; report: $outdir/reports/servers/index.html"
  log "versions: $versions"
  summarize "$outdir/reports/servers"
}

main "$@"; exit $?

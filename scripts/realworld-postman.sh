#!/usr/bin/env bash
# Run the RealWorld (Conduit) Postman suite with newman against a fastpost started on a fresh
# SQLite database (or, with FASTPOST_DB__SHARDS set, on those databases in sharded mode);
# exit non-zero on any failed request or assertion.
#
#   scripts/realworld-postman.sh [DIR]
#
# DIR holds Conduit.postman_collection.json (default: ../shared/realworld, from the
# repository root); the collection is read from there, never copied into the repository.
# newman is installed with npm on first use into NEWMAN_HOME
# (default: ~/.cache/fastpost/newman). The last line printed is the summary:
#   newman: requests N (failed F), assertions N (failed F)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$ROOT/../shared/realworld}
COLLECTION="$DIR/Conduit.postman_collection.json"
NEWMAN_HOME=${NEWMAN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/fastpost/newman}
NEWMAN="$NEWMAN_HOME/node_modules/.bin/newman"
PYTHON="$ROOT/.venv/bin/python"
FASTPOST="$ROOT/.venv/bin/fastpost"

[[ -f "$COLLECTION" ]] || { echo "no Postman collection at $COLLECTION" >&2; exit 2; }
if [[ ! -x "$NEWMAN" ]]; then
    command -v npm >/dev/null || { echo "npm is needed to install newman" >&2; exit 2; }
    echo "installing newman into $NEWMAN_HOME" >&2
    npm install --prefix "$NEWMAN_HOME" newman --no-audit --no-fund --loglevel=error >&2
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export FASTPOST_DATA_DIR="$WORK/data"
export FASTPOST_OBSERVABILITY__ACCESS_LOG=false
# Sharded mode when FASTPOST_DB__SHARDS is set: its databases, prepared by the caller
# (`fastpost shards init`), are used as they are.
if [[ -z "${FASTPOST_DB__SHARDS:-}" ]]; then
    export FASTPOST_DB__URL="sqlite+aiosqlite:///$WORK/fastpost.db"
    "$FASTPOST" db upgrade >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log" >&2; exit 1; }
fi
"$FASTPOST" serve --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
    if "$PYTHON" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "$BASE/health" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done

# Fresh names each run, short enough for "celeb_" + USERNAME to be a valid username.
RUN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(4))')
status=0
"$NEWMAN" run "$COLLECTION" \
    --global-var "APIURL=$BASE/api" \
    --global-var "USERNAME=u$RUN" \
    --global-var "EMAIL=u$RUN@example.com" \
    --global-var "PASSWORD=password-$RUN" \
    --reporters cli,json --reporter-json-export "$WORK/report.json" \
    --color off || status=$?

if [[ -f "$WORK/report.json" ]]; then
    "$PYTHON" - "$WORK/report.json" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))["run"]["stats"]
print(
    f"newman: requests {stats['requests']['total']} (failed {stats['requests']['failed']}), "
    f"assertions {stats['assertions']['total']} (failed {stats['assertions']['failed']})"
)
PY
fi
if [[ $status -ne 0 ]]; then
    echo "--- server log ---" >&2
    tail -50 "$WORK/server.log" >&2
fi
exit $status

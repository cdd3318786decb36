#!/usr/bin/env bash
# Interoperability of edgecascade's Open Inference Protocol v2 (KServe v2) side with real
# third-party software from PyPI, not mocks:
#
#   1. NVIDIA's Triton HTTP client (tritonclient[http]) calls `edgecascade host --oip-listen`:
#      health, metadata, inference on the demo photos in JSON and binary tensors, batch 1 and
#      one batch of all photos (logits equal ONNX Runtime's on the same tensor), bad requests
#      (4xx, and the host goes on), concurrency, statistics. Once on a plain host, once on a
#      host with dynamic batching (--batch-max 8 --batch-wait-ms 5).
#   2. Seldon MLServer serves the large model (ONNX Runtime in a small MLModel class,
#      scripts/interop/mlserver/) and `edgecascade run --link oip+http://...` offloads every
#      photo to it (--threshold 1): each answer is the one `edgecascade classify` gives.
#   3. NVIDIA Triton Inference Server (the tritonserver binary of the nvidia-pytriton wheel,
#      Python 3.12) serves the same model, and `edgecascade run` offloads to it with binary
#      tensors. Only where a Python 3.12 is found (`INTEROP_PYTHON312`, python3.12 on PATH or
#      pyenv's); skipped otherwise, or with --skip-triton-server.
#
#   scripts/interop.sh [--build] [--skip-triton-server] [--pip] [--keep]
#
#   --build               run `cargo build --locked` first (by default the built binary,
#                         target/debug/edgecascade or $EDGECASCADE_BIN, is used as it is; it is
#                         built only when missing)
#   --skip-triton-server  skip part 3
#   --pip                 install with pip alone (by default uv, itself pip-installed from
#                         PyPI, installs the same pinned packages in a fraction of pip's time;
#                         pip takes over whenever uv fails)
#   --keep                keep the work folder (logs, answers) even when every check passed
#
# Python packages go into venvs under target/ (target/interop-venv, target/interop-venv312),
# made on first use with the versions pinned in scripts/interop/requirements*.txt and
# constraints*.txt; a later run reuses them. Every server listens on loopback only, on free
# ports; every step has a timeout, and every process started here is stopped on exit.
# Prints PASS, FAIL or SKIP per check, then a summary line `interop: N passed, M failed,
# K skipped`; exits 1 when any check failed.
set -uo pipefail # no -e: a failed check is recorded and the next one runs
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

MODEL=efficientnet-lite2-fp32
BIN=${EDGECASCADE_BIN:-$ROOT/target/debug/edgecascade}
VENV=$ROOT/target/interop-venv
VENV312=$ROOT/target/interop-venv312
HERE=$ROOT/scripts/interop

# Timeouts, in seconds.
T_PIP=900        # creating a venv and installing its packages
T_START=180      # a server coming up (loading its model included)
T_CHECKS=600     # one Python check script
T_CLI=300        # one edgecascade classify / run over the photos
T_STOP=10        # a server stopping on SIGTERM before it gets SIGKILL

UV_VERSION=0.13.9 # the installer (see --pip)

build=0 triton_server=1 keep=0 use_uv=1
for arg in "$@"; do
    case $arg in
        --build) build=1 ;;
        --skip-triton-server) triton_server=0 ;;
        --pip) use_uv=0 ;;
        --keep) keep=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "interop.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgecascade-interop.XXXXXX")
export INTEROP_RESULTS=$WORK/results.tsv # every check appends `PASS|FAIL<TAB>name<TAB>detail`
: >"$INTEROP_RESULTS"
T0=$SECONDS

# ---------------------------------------------------------------- processes and cleanup

# Process groups started here and not stopped yet (each server runs in its own session, so
# its workers go with it).
GROUPS_STARTED=()

# stop_group PID: SIGTERM to the process (a server shuts its own workers down), then after
# T_STOP seconds SIGKILL to whatever is left of its process group. Each group is stopped
# once: a pid this script no longer owns is never signalled.
stop_group() {
    local pid=$1 i
    forget_group "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < T_STOP * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# bounded SECONDS CMD...: runs CMD under `timeout`, waiting for it in a way a signal to this
# script interrupts (bash runs a trap only once a foreground command is over), so that an
# interrupted run stops at once, CMD included.
FG_PID=
bounded() {
    local secs=$1 rc
    shift
    timeout "$secs" "$@" &
    FG_PID=$!
    wait "$FG_PID"
    rc=$?
    FG_PID=
    return $rc
}

# forget_group PID: drops PID from GROUPS_STARTED; false when it was not there.
forget_group() {
    local p live=()
    for p in "${GROUPS_STARTED[@]}"; do [[ $p == "$1" ]] || live+=("$p"); done
    ((${#live[@]} < ${#GROUPS_STARTED[@]})) || return 1
    GROUPS_STARTED=("${live[@]}")
}

cleanup() {
    local pid
    # timeout passes the signal on to its command.
    [[ -n $FG_PID ]] && kill -TERM "$FG_PID" 2>/dev/null && wait "$FG_PID" 2>/dev/null
    for pid in "${GROUPS_STARTED[@]}"; do stop_group "$pid"; done
    if ((keep)) || grep -q '^FAIL' "$INTEROP_RESULTS" 2>/dev/null; then
        echo "interop: logs and answers kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo "interop: interrupted" >&2; exit 130' INT TERM

# start_bg LOG_PREFIX CMD...: runs CMD in a new session, stdout to LOG_PREFIX.out and stderr
# to LOG_PREFIX.err; its pid (its group's id) is in $BG_PID.
start_bg() {
    local log=$1
    shift
    setsid "$@" >"$log.out" 2>"$log.err" </dev/null &
    BG_PID=$!
    GROUPS_STARTED+=("$BG_PID")
}

# ------------------------------------------------------------------------- reporting

record() { # STATUS NAME DETAIL
    local detail=${3//$'\n'/ }
    printf '%s\t%s\t%s\n' "$1" "$2" "$detail" >>"$INTEROP_RESULTS"
    printf '%s  %s%s\n' "$1" "$2" "${detail:+  ($detail)}"
}

step() { echo; echo "== $* [$((SECONDS - T0)) s]"; }

# run_checks GROUP CMD...: runs a Python check script (which records its own checks); a
# script that dies without recording a failure (an import error, a timeout) is one FAIL.
run_checks() {
    local group=$1 fails_before rc
    shift
    fails_before=$(grep -c '^FAIL' "$INTEROP_RESULTS")
    bounded "$T_CHECKS" "$@"
    rc=$?
    if ((rc != 0)) && (($(grep -c '^FAIL' "$INTEROP_RESULTS") == fails_before)); then
        record FAIL "$group: check script" "exited $rc$( ((rc == 124)) && echo " (timed out after ${T_CHECKS} s)")"
    fi
}

# slug TEXT: TEXT as a file name (runs of anything but letters and digits become one dash).
slug() {
    tr -cs 'A-Za-z0-9' '-' <<<"$1" | sed 's/^-//; s/-$//'
}

# last_error FILE: the last line of a log that says what went wrong, for a FAIL's detail.
last_error() {
    local line
    line=$(grep -iE 'error|exception|fail' "$1" 2>/dev/null | tail -n 1 | cut -c1-400)
    echo "${line:-nothing in $1}"
}

summary() {
    local passed failed skipped
    passed=$(grep -c '^PASS' "$INTEROP_RESULTS")
    failed=$(grep -c '^FAIL' "$INTEROP_RESULTS")
    skipped=$(grep -c '^SKIP' "$INTEROP_RESULTS")
    echo
    echo "== summary [$((SECONDS - T0)) s]"
    awk -F'\t' '{ printf "%s  %s\n", $1, $2 }' "$INTEROP_RESULTS"
    if ((failed)); then
        echo
        echo "failures:"
        awk -F'\t' '$1 == "FAIL" { printf "  %s: %s\n", $2, $3 }' "$INTEROP_RESULTS"
    fi
    echo "interop: $passed passed, $failed failed, $skipped skipped"
    ((failed == 0))
}

# ---------------------------------------------------------------------------- helpers

# ensure_venv DIR PYTHONS REQUIREMENTS CONSTRAINTS: a venv at DIR with exactly these pins, made
# by the first of PYTHONS (space-separated) that can make one with pip in it.
# A stamp (a copy of both files) makes a later run skip pip when nothing changed.
ensure_venv() {
    local dir=$1 pythons=$2 req=$3 cons=$4 stamp=$1/.interop-pins t
    if [[ -x $dir/bin/python ]] && cat "$req" "$cons" | cmp -s - "$stamp"; then
        echo "venv $dir is up to date"
        return 0
    fi
    t=$SECONDS
    echo "creating $dir and installing $req with every version pinned"
    make_venv "$dir" $pythons || return 1
    if ! ((use_uv)) || ! install_with_uv "$dir" "$req" "$cons"; then
        ((use_uv)) && echo "uv failed; installing with pip (a few minutes)"
        bounded "$T_PIP" "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$req" -c "$cons" || return 1
    fi
    cat "$req" "$cons" >"$stamp"
    echo "installed in $((SECONDS - t)) s"
}

# make_venv DIR PYTHON...: a venv with pip at DIR, made by the first PYTHON that can. Debian's
# python3 cannot without its python3-venv package (ensurepip is left out), and which python3
# comes first on PATH differs between machines.
make_venv() {
    local dir=$1 p
    shift
    for p in "$@"; do
        command -v "$p" >/dev/null || continue
        rm -rf "$dir"
        if bounded "$T_PIP" "$p" -m venv "$dir" >/dev/null 2>&1 && [[ -x $dir/bin/pip ]]; then
            echo "venv made with $(command -v "$p") ($("$p" --version 2>&1))"
            return 0
        fi
        echo "$p cannot make a venv with pip; trying the next Python"
    done
    rm -rf "$dir"
    echo "none of these Pythons can make a venv with pip: $* (on Debian: apt-get install python3-venv)"
    return 1
}

# install_with_uv DIR REQUIREMENTS CONSTRAINTS: uv (pinned, pip-installed from PyPI into the
# main venv the first time) installs into the venv at DIR. pip resolves, downloads and
# installs one package at a time: 70 to 140 s for the main venv here, uv about 10 s.
install_with_uv() {
    local uv=$VENV/bin/uv
    if [[ ! -x $uv ]]; then
        bounded "$T_PIP" "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "uv==$UV_VERSION" || return 1
    fi
    bounded "$T_PIP" "$uv" pip install --quiet --python "$1/bin/python" -r "$2" -c "$3"
}

# free_ports N: N distinct free TCP ports on loopback (bound together, then released).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wait_http URL PID SECONDS: until URL answers 200, the process PID exits, or time runs out.
wait_http() {
    local url=$1 pid=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 2
        "$PY" - "$url" <<'EOF' && return 0
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
        sleep 0.5
    done
    return 1
}

# start_host LABEL ARGS...: an edgecascade host serving OIP v2 on a free loopback port.
# Sets HOST_PID and HOST_ADDR (HOST:PORT) and returns 0 once its ready line is out;
# otherwise records a FAIL and returns 1.
start_host() {
    local label=$1 log deadline
    shift
    log=$WORK/$(slug "$label")
    start_bg "$log" "$BIN" host --model "models/$MODEL.toml" --oip-listen 127.0.0.1:0 "$@"
    HOST_PID=$BG_PID HOST_ADDR=
    deadline=$((SECONDS + T_START))
    while ((SECONDS < deadline)); do
        HOST_ADDR=$(grep -o 'over OIP v2 on http://[^/]*' "$log.out" | sed 's|.*http://||' | head -n 1)
        [[ -n $HOST_ADDR ]] && break
        kill -0 "$HOST_PID" 2>/dev/null || break
        sleep 0.2
    done
    if [[ -n $HOST_ADDR ]]; then
        record PASS "$label: starts" "OIP v2 on http://$HOST_ADDR"
        return 0
    fi
    if kill -0 "$HOST_PID" 2>/dev/null; then
        record FAIL "$label: starts" "no ready line within $T_START s ($log.err)"
        stop_group "$HOST_PID"
    else
        wait "$HOST_PID"
        record FAIL "$label: starts" "exited $? before its ready line: $(last_error "$log.err")"
        forget_group "$HOST_PID" # gone: its pid is no longer ours to signal
    fi
    return 1
}

# device_against GROUP URL ENCODING: `edgecascade run` over the photos, offloading every one
# to the OIP server at URL (http://HOST:PORT), compared with `classify`'s answers.
device_against() {
    local group=$1 url=$2 encoding=$3 out rc
    out=$WORK/$(slug "$group")
    bounded "$T_CLI" "$BIN" run --link "oip+$url/v2/models/$MODEL" --threshold 1 --json \
        --reply-timeout-ms 30000 photos >"$out.jsonl" 2>"$out.err"
    rc=$?
    ((rc != 0)) && echo "edgecascade run exited $rc: $(last_error "$out.err")"
    run_checks "$group" "$PY" "$HERE/compare_answers.py" --group "$group" --run "$out.jsonl" \
        --run-status "$rc" --classify "$WORK/classify.jsonl" --encoding "$encoding"
}

# --------------------------------------------------------------------------------- setup

step "setup: Python packages"
PY=$VENV/bin/python
# INTEROP_PYTHON first if set, then whichever Python 3 this machine has.
pythons="${INTEROP_PYTHON:-} python3 python3.11 /usr/bin/python3 $(echo "$(pyenv root 2>/dev/null)"/versions/3.1*/bin/python3 "$HOME"/.pyenv/versions/3.1*/bin/python3)"
if ensure_venv "$VENV" "$pythons" "$HERE/requirements.txt" "$HERE/constraints.txt"; then
    record PASS "setup: venv with the pinned packages" "$("$PY" -c 'from importlib.metadata import version as v
print(", ".join(f"{p} {v(p)}" for p in ("tritonclient", "mlserver", "onnxruntime", "numpy", "pillow")))')"
else
    record FAIL "setup: venv with the pinned packages" "install failed (output above)"
    summary
    exit 1
fi

step "setup: the edgecascade binary"
if ((build)) || [[ ! -x $BIN ]]; then
    bounded 3600 cargo build --locked || record FAIL "setup: cargo build --locked" "exited $?"
fi
if [[ ! -x $BIN ]]; then
    record FAIL "setup: edgecascade binary" "$BIN is missing (run cargo build)"
    summary
    exit 1
fi
bounded "$T_CLI" "$BIN" classify --threshold 1 --json photos >"$WORK/classify.jsonl" 2>"$WORK/classify.err"
rc=$?
if ((rc == 0)); then
    record PASS "setup: edgecascade classify (the large model's own answers)" \
        "$(grep -c '"input"' "$WORK/classify.jsonl") photos"
else
    record FAIL "setup: edgecascade classify (the large model's own answers)" \
        "exited $rc: $(last_error "$WORK/classify.err")"
fi

# ----------------------------------------------------------- 1. Triton's client -> host

for variant in "plain" "batching"; do
    if [[ $variant == plain ]]; then
        label="tritonclient -> edgecascade host"
        args=()
    else
        label="tritonclient -> edgecascade host --batch-max 8"
        args=(--batch-max 8 --batch-wait-ms 5)
    fi
    step "$label"
    if start_host "$label" "${args[@]}"; then
        run_checks "$label" "$PY" "$HERE/triton_client_checks.py" --url "$HOST_ADDR" --model "$MODEL" --group "$label"
        stop_group "$HOST_PID"
    fi
done

# --------------------------------------------------------------- 2. device -> MLServer

label="edgecascade run -> MLServer"
step "$label"
read -r http_port grpc_port metrics_port <<<"$(free_ports 3)"
mkdir -p "$WORK/mlserver" # its working folder: MLServer keeps .metrics/ and .envs/ there
start_bg "$WORK/mlserver/log" env -C "$WORK/mlserver" \
    MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT="$http_port" MLSERVER_GRPC_PORT="$grpc_port" \
    MLSERVER_METRICS_PORT="$metrics_port" \
    "$VENV/bin/mlserver" start "$HERE/mlserver"
mlserver_pid=$BG_PID
url=http://127.0.0.1:$http_port
t=$SECONDS
wait_http "$url/v2/models/$MODEL/ready" "$mlserver_pid" "$T_START"
case $? in
    0) record PASS "$label: MLServer up, model ready" "$url, in $((SECONDS - t)) s (grpc $grpc_port, metrics $metrics_port)" ;;
    1) record FAIL "$label: MLServer up, model ready" "not ready within $T_START s: $(last_error "$WORK/mlserver/log.err")" ;;
    *) record FAIL "$label: MLServer up, model ready" "exited: $(last_error "$WORK/mlserver/log.err")" ;;
esac
if kill -0 "$mlserver_pid" 2>/dev/null && grep -q "^PASS.$label: MLServer up" "$INTEROP_RESULTS"; then
    run_checks "$label" "$PY" "$HERE/server_checks.py" --url "$url" --model "$MODEL" --group "$label" \
        --no-binary-extension
    device_against "$label" "$url" oip-fp32-json
fi
stop_group "$mlserver_pid"

# -------------------------------------------------- 3. device -> Triton (through PyTriton)

# find_python312: a Python 3.12 interpreter ($INTEROP_PYTHON312, python3.12, pyenv's).
find_python312() {
    local p
    for p in "${INTEROP_PYTHON312:-}" "$(command -v python3.12)" \
        "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        if [[ -n $p && -x $p ]] && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

label="edgecascade run -> Triton server (PyTriton)"
step "$label"
if ! ((triton_server)); then
    record SKIP "$label" "--skip-triton-server"
elif ! py312=$(find_python312); then
    record SKIP "$label" "no Python 3.12 (set INTEROP_PYTHON312): the wheel's tritonserver needs it"
elif ! ensure_venv "$VENV312" "$py312" "$HERE/requirements-triton.txt" "$HERE/constraints-triton.txt"; then
    record FAIL "$label: venv with the pinned packages" "install failed (output above)"
else
    read -r http_port grpc_port metrics_port <<<"$(free_ports 3)"
    # The Python backend's stub links against libpython3.12.so: that Python's lib folder.
    libdir=$("$VENV312/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    mkdir -p "$WORK/triton"
    start_bg "$WORK/triton/log" env LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$VENV312/bin/python" "$HERE/pytriton_server.py" --onnx "models/$MODEL.onnx" --name "$MODEL" \
        --http-port "$http_port" --grpc-port "$grpc_port" --metrics-port "$metrics_port" \
        --workspace "$WORK/triton/workspace"
    triton_pid=$BG_PID
    url=http://127.0.0.1:$http_port
    t=$SECONDS
    wait_http "$url/v2/models/$MODEL/ready" "$triton_pid" "$T_START"
    case $? in
        0) record PASS "$label: Triton up, model ready" "$url, in $((SECONDS - t)) s (grpc $grpc_port, metrics $metrics_port)" ;;
        1) record FAIL "$label: Triton up, model ready" "not ready within $T_START s: $(last_error "$WORK/triton/log.err")" ;;
        *) record FAIL "$label: Triton up, model ready" "exited: $(last_error "$WORK/triton/log.err")" ;;
    esac
    if kill -0 "$triton_pid" 2>/dev/null && grep -q "^PASS.$label: Triton up" "$INTEROP_RESULTS"; then
        run_checks "$label" "$PY" "$HERE/server_checks.py" --url "$url" --model "$MODEL" --group "$label" \
            --binary-extension
        device_against "$label" "$url" oip-fp32-binary
    fi
    stop_group "$triton_pid"
    rm -rf "$WORK/triton/workspace" # PyTriton's copy of tritonserver: large, and no log in it
fi

# ------------------------------------------------------------------------------- summary

summary

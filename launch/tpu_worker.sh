#!/usr/bin/env bash
# The worker side of launch/tpu_vm.py (copied to every Cloud TPU VM worker as ~/stableaudio-jax-worker.sh) and of
# launch/xpk.py (layered into the container as /app/tpu_worker.sh). One action per call:
#
#   setup          a Python >= 3.11 environment with jax[tpu] and --package: built in a fresh folder, verified
#                  (the version, jax.devices() on TPU), then switched in whole; a failure removes it
#   check-log-dir  whether this worker can write --log-dir (one line saying what to do when it cannot)
#   start          `main` detached from the ssh session; returns at once
#   main           the command in the foreground: output to the log, the log copied to --log-dir as it grows,
#                  SIGTERM passed on, the exit code kept in a file (what `status` and `recover` read)
#   status | logs [--lines N] [--follow] | stop
#
# Needs bash, coreutils, setsid (util-linux) and curl; gcloud for gs:// copies (on every TPU VM image), else the
# environment's own gcsfs. State lives in ~/.stableaudio-jax, the log in ~/stableaudio-jax.log.
set -uo pipefail

STATE="$HOME/.stableaudio-jax"
VENV="$HOME/stableaudio-venv"
LOG="$HOME/stableaudio-jax.log"
METADATA="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
ACTION="${1:-}"
shift || true
ARGS=("$@")
NODE="node" LOG_DIR="" COPY_EVERY=60 PYTHON=3.12 PACKAGE="" LINES=50 FOLLOW=0 ECHO=0 SIGNAL_EXIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --node) NODE="$2"; shift 2 ;;
    --log-dir) LOG_DIR="${2%/}"; shift 2 ;;
    --copy-every) COPY_EVERY="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --package) PACKAGE="$2"; shift 2 ;;
    --lines) LINES="$2"; shift 2 ;;
    --follow) FOLLOW=1; shift ;;
    --echo) ECHO=1; shift ;;  # main: the output to stdout too (a container's log)
    --signal-exit) SIGNAL_EXIT="$2"; shift 2 ;;  # main: exit code after a SIGTERM (xpk restarts on 42)
    --) shift; break ;;
    *) echo "stableaudio-jax-worker $ACTION: unknown option $1" >&2; exit 2 ;;
  esac
done
COMMAND=("$@")
# a multi-slice GKE workload names its folder per slice: '{slice}' in --node becomes MEGASCALE_SLICE_ID
NODE="${NODE//\{slice\}/${MEGASCALE_SLICE_ID:-0}}"

worker_index() {
  # GKE sets TPU_WORKER_ID (an indexed Job also JOB_COMPLETION_INDEX); a Cloud TPU VM's metadata has
  # agent-worker-number. These are what JAX itself reads (jax/_src/clusters/cloud_tpu_cluster.py).
  if [ -n "${TPU_WORKER_ID:-}" ]; then echo "$TPU_WORKER_ID"; return; fi
  if [ -n "${JOB_COMPLETION_INDEX:-}" ]; then echo "$JOB_COMPLETION_INDEX"; return; fi
  curl -sf -m 5 -H 'Metadata-Flavor: Google' "$METADATA/agent-worker-number" && return
  echo "stableaudio-jax-worker $ACTION on $(hostname): cannot tell this worker's index: no \$TPU_WORKER_ID and" \
    "no TPU VM metadata (agent-worker-number); set TPU_WORKER_ID" >&2
  exit 1
}
WORKER="$(worker_index)" || exit 1
WHERE="$NODE worker $WORKER ($(hostname))"
say() { echo "stableaudio-jax $ACTION: $WHERE: $*"; }
fail() { echo "stableaudio-jax $ACTION: $WHERE: $*" >&2; exit 1; }
last_line() { printf '%s\n' "$1" | grep -v '^[[:space:]]*$' | tail -n 1; }

# ---- gs:// copies: gcloud where it exists (TPU VM images), else the environment's gcsfs (a bare container)
gcs_cp() {
  if command -v gcloud >/dev/null 2>&1; then
    gcloud storage cp "$1" "$2"
  elif [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c 'import fsspec, shutil, sys
with fsspec.open(sys.argv[1], "rb") as src, fsspec.open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$1" "$2"
  else
    echo "neither gcloud nor $VENV (with gcsfs) is on this worker to copy to $2"; return 127
  fi
}
gcs_rm() {
  if command -v gcloud >/dev/null 2>&1; then gcloud storage rm "$1"
  else "$VENV/bin/python" -c 'import fsspec, sys; fsspec.open(sys.argv[1]).fs.rm(sys.argv[1])' "$1"; fi
}
log_object() { echo "$LOG_DIR/$NODE/worker-$WORKER.log"; }

check_log_dir() {
  [ -n "$LOG_DIR" ] || fail "--log-dir is required"
  local probe tmp out bucket
  probe="$LOG_DIR/$NODE/.write-check-worker-$WORKER" tmp="$(mktemp)"
  bucket="$(echo "$LOG_DIR" | cut -d/ -f1-3)"
  date -u +%FT%TZ >"$tmp"
  # twice: the copies overwrite the log object, which needs delete rights as well as create (objectCreator
  # alone lets the first copy through and fails every later one)
  if ! out="$(gcs_cp "$tmp" "$probe" 2>&1 && gcs_cp "$tmp" "$probe" 2>&1 && gcs_rm "$probe" 2>&1)"; then
    rm -f "$tmp"
    fail "cannot write --log-dir $LOG_DIR ($(last_line "$out")): give this worker's service account" \
      "roles/storage.objectAdmin on $bucket (and the VM a storage read-write or cloud-platform access scope)," \
      "or choose another --log-dir"
  fi
  rm -f "$tmp"
  say "can write $LOG_DIR/$NODE/"
}

# ---- setup
running_pid() {  # the pid of this worker's run, if one is alive (a stale pid file after a reboot is not)
  local pid
  [ -f "$STATE/pid" ] && pid="$(cat "$STATE/pid")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' main ' && echo "$pid"
}

ensure_uv() {
  # uv gives the same Python on every worker without root: a prebuilt python-build-standalone CPython in
  # ~/.local/share/uv, whatever the image's python3 is. From PyPI with the image's python3; the official
  # installer where that python3 has no pip (or refuses --user installs: PEP 668 images).
  UV="$(command -v uv || echo "$HOME/.local/bin/uv")"
  [ -x "$UV" ] && return 0
  python3 -m pip install --user --quiet uv \
    || curl -LsSf https://astral.sh/uv/install.sh | env UV_INSTALL_DIR="$HOME/.local/bin" UV_NO_MODIFY_PATH=1 sh
  UV="$HOME/.local/bin/uv"
  [ -x "$UV" ]
}

VERIFY='import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python {sys.version.split()[0]} is older than 3.11")
import jax
devices = jax.devices()
if devices[0].platform != "tpu":
    sys.exit(f"jax.devices() reports {devices[0].platform}, not TPU")
print(f"Python {sys.version.split()[0]}, jax {jax.__version__}, {len(devices)} {devices[0].device_kind} devices")'

verify() {  # every worker of a slice must take part in TPU start-up, so a lone worker would wait: a timeout
  timeout 600 "$1" -c "$VERIFY"
  local code=$?
  [ $code -eq 124 ] && echo "jax.devices() did not answer within 600 s (every worker must run setup together)"
  return $code
}

step() {  # step NAME HINT COMMAND...: output to setup.log; on failure one line naming the step and what to do
  local name="$1" hint="$2"
  shift 2
  "$@" >>"$STATE/setup.log" 2>&1 && return 0
  fail "setup step '$name' failed: $(tail -n 1 "$STATE/setup.log"); $hint (full output: $STATE/setup.log)"
}

setup() {
  [ -n "$PACKAGE" ] || fail "--package is required"
  local pid old
  if pid="$(running_pid)"; then fail "a run is going (pid $pid): stop it first (tpu_vm.py stop)"; fi
  mkdir -p "$STATE/venvs" && : >"$STATE/setup.log"
  NEW="$STATE/venvs/$(date -u +%Y%m%d-%H%M%S)-$$"
  trap 'rm -rf "$NEW"' EXIT  # a failed setup leaves no half-installed environment behind
  step "install uv" "check this worker's access to PyPI and astral.sh (a VM without an external IP needs Cloud NAT)" \
    ensure_uv
  step "create a Python $PYTHON environment" \
    "uv downloads Python from GitHub: check access to github.com, or pass another --python (3.11 or newer)" \
    "$UV" venv --python "$PYTHON" "$NEW"
  step "install jax[tpu] and $PACKAGE" "check --package (pin a commit) and access to PyPI / GitHub" \
    "$UV" pip install --python "$NEW/bin/python" 'jax[tpu]' "$PACKAGE"
  step "verify Python >= 3.11 and TPU devices" "a busy TPU (another process holds it) or a jax / libtpu mismatch" \
    verify "$NEW/bin/python"
  # switch by renaming a symlink (atomic): a venv cannot be moved (its scripts name their own absolute path)
  old="$(readlink "$VENV" 2>/dev/null || true)"
  [ -e "$VENV" ] && [ ! -L "$VENV" ] && rm -rf "$VENV"  # a folder from an older, by-hand install
  ln -sfn "$NEW" "$VENV.new" && mv -T "$VENV.new" "$VENV" || fail "could not switch $VENV to $NEW"
  trap - EXIT
  [ -n "$old" ] && [ "$old" != "$NEW" ] && rm -rf "$old"
  say "ready: $VENV ($(tail -n 1 "$STATE/setup.log"))"
}

# ---- the run
start() {
  [ ${#COMMAND[@]} -gt 0 ] || fail "expected the command after --"
  [ -x "$VENV/bin/python" ] || fail "no environment at $VENV: run \`tpu_vm.py setup\` first"
  local pid
  if pid="$(running_pid)"; then
    fail "a run is already going (pid $pid): \`tpu_vm.py stop\` it, or follow it with \`logs --follow\`"
  fi
  mkdir -p "$STATE" && rm -f "$STATE/exit-code" "$STATE/pid"
  if [ -n "$LOG_DIR" ] && [ ! -s "$LOG" ]; then
    gcs_cp "$(log_object)" "$LOG" >/dev/null 2>&1 || true  # a re-created VM continues the bucket's copy of its log
  fi
  # setsid: a session of its own, so the SIGHUP of a closing ssh connection never reaches the run (nohup: nor
  # to one that asks for a terminal); every descriptor redirected, so ssh returns at once
  setsid nohup bash "$0" main "${ARGS[@]}" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 50); do [ -s "$STATE/pid" ] && break; sleep 0.2; done
  [ -s "$STATE/pid" ] || fail "the run did not start (see $LOG)"
  say "started (pid $(cat "$STATE/pid")): output in $LOG${LOG_DIR:+, copied to $(log_object) every ${COPY_EVERY}s}"
}

copy_log() {  # one copy of the log to the bucket; the first failure of a run is noted in the log itself
  gcs_cp "$LOG" "$(log_object)" >"$STATE/log-copy.out" 2>&1 && return 0
  [ -f "$STATE/log-copy.failed" ] && return 1
  touch "$STATE/log-copy.failed"
  echo "=== $WHERE: copying the log to $(log_object) failed: $(last_line "$(cat "$STATE/log-copy.out")")" >>"$LOG"
  return 1
}

copy_loop() {  # ends with the run's wrapper, even when that is killed outright
  local main_pid=$1 size last=""
  while sleep "$COPY_EVERY" && kill -0 "$main_pid" 2>/dev/null; do
    size="$(stat -c %s "$LOG" 2>/dev/null || echo 0)"
    [ "$size" != "$last" ] && copy_log && last="$size"
  done
}

main() {
  mkdir -p "$STATE" && rm -f "$STATE/exit-code" "$STATE/log-copy.failed"
  echo $$ >"$STATE/pid"
  local tee_pid="" copier="" child code signalled=0
  if [ "$ECHO" = 1 ]; then exec > >(tee -a "$LOG") 2>&1; tee_pid=$!; else exec >>"$LOG" 2>&1; fi
  echo "=== $(date -u +%FT%TZ) $WHERE: start: ${COMMAND[*]}"
  # the copier's own output goes nowhere: a descriptor it held on the tee pipe would keep the pipe open
  [ -n "$LOG_DIR" ] && { copy_loop $$ >/dev/null 2>&1 & copier=$!; }
  [ -d "$VENV/bin" ] && export PATH="$VENV/bin:$PATH"
  # its own process group, so a stop reaches everything the command starts; this wrapper stays to record the
  # exit code (SIGTERM: the trainers save a checkpoint and exit)
  setsid "${COMMAND[@]}" &
  child=$!
  trap 'signalled=1; kill -TERM -- "-$child" 2>/dev/null' TERM INT HUP
  while kill -0 "$child" 2>/dev/null; do wait "$child"; done
  wait "$child"
  code=$?
  echo "=== $(date -u +%FT%TZ) $WHERE: exited with $code"
  # a stopped run that exits 0 is not finished: in a container, a code that makes the workload restart
  [ "$signalled" = 1 ] && [ -n "$SIGNAL_EXIT" ] && code="$SIGNAL_EXIT"
  [ -n "$copier" ] && kill "$copier" 2>/dev/null
  if [ -n "$tee_pid" ]; then exec >>"$LOG" 2>&1; wait "$tee_pid" 2>/dev/null; fi  # tee has written it all
  [ -n "$LOG_DIR" ] && copy_log
  # written last: `status` reports the end only once the log's final copy is in the bucket; "stopped": ended
  # after a SIGTERM (a stop, a preemption notice), so not finished even when the code is 0
  echo "$([ "$signalled" = 1 ] && echo stopped || echo exited) $code" >"$STATE/exit-code.tmp" \
    && mv "$STATE/exit-code.tmp" "$STATE/exit-code"
  exit "$code"
}

status() {  # one line `recover` parses: running | exited N | stopped N | died | not started
  local pid
  if [ -f "$STATE/exit-code" ]; then say "$(cat "$STATE/exit-code")"
  elif pid="$(running_pid)"; then say "running (pid $pid)"
  elif [ -f "$STATE/pid" ]; then say "died (no exit code: killed, or the VM restarted)"
  else say "not started"; fi
}

logs() {
  [ -f "$LOG" ] || { say "no log yet ($LOG)"; return 0; }
  if [ "$FOLLOW" = 1 ]; then tail -n "$LINES" -F "$LOG" | sed -u "s|^|[$NODE w$WORKER] |"
  else tail -n "$LINES" "$LOG" | sed "s|^|[$NODE w$WORKER] |"; fi
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid" && say "SIGTERM sent to the run (pid $pid): it saves a checkpoint and exits"
  else say "no run is going"; fi
}

case "$ACTION" in
  setup) setup ;;
  check-log-dir) check_log_dir ;;
  start) start ;;
  main) main ;;
  status) status ;;
  logs) logs ;;
  stop) stop ;;
  *) echo "stableaudio-jax-worker: unknown action '$ACTION'; expected setup, check-log-dir, start, main, status," \
    "logs or stop" >&2; exit 2 ;;
esac

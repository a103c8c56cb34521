# tests/interop/haproxy.sh: two reference servers behind HAProxy (round robin, health
# checks), reached through the one address BootAgent knows: it keeps reporting while one
# backend dies and after it comes back. Figure: the longest gap between answered reports
# around the failure, beside the normal gap (the step, 1 s).

# status_walls PORT: wall times of the status reports answered 200 by that server.
status_walls() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/admin/requests?path=/agent/status" 2>/dev/null |
    python3 -c 'import json,sys
for r in json.load(sys.stdin):
    if r.get("status") == 200:
        print(r["wall"])'
}

count_walls_after() { # PORT T: answered reports at that server after wall time T
  status_walls "$1" | awk -v t="$2" '$1 > t { n++ } END { print n + 0 }'
}

reports_after_at_least() { # PORT T N
  [ "$(count_walls_after "$1" "$2")" -ge "$3" ]
}

case_haproxy() {
  local dir=$1
  start_refserver "$dir/a" --step 1 --adopt || {
    fail haproxy "reference server A did not start"
    return
  }
  local a=$RS_PORT a_pid=$RS_PID
  start_refserver "$dir/b" --step 1 --adopt || {
    fail haproxy "reference server B did not start"
    return
  }
  local b=$RS_PORT lb
  lb=$(free_port)
  cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 256
defaults
  mode http
  option redispatch
  retries 2
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend fleet
  bind 127.0.0.1:$lb
  default_backend servers
backend servers
  balance roundrobin
  option httpchk GET /admin
  default-server inter 500ms fall 2 rise 2
  server a 127.0.0.1:$a check
  server b 127.0.0.1:$b check
EOF
  if ! haproxy -c -q -f "$dir/haproxy.cfg" >"$dir/haproxy.check" 2>&1; then
    fail haproxy "haproxy refused its configuration: $(head -3 "$dir/haproxy.check")"
    return
  fi
  haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
  track $!
  if ! wait_for 10 port_open "$lb"; then
    fail haproxy "haproxy did not listen: $(tail -3 "$dir/haproxy.log")"
    return
  fi

  start_agent "$dir/agent" -S "127.0.0.1:$lb"
  # Round robin: both backends get reports (each registers the agent once it is new to it).
  if wait_for 30 reports_after_at_least "$a" 0 2 && wait_for 30 reports_after_at_least "$b" 0 2; then
    pass haproxy-round-robin
  else
    fail haproxy-round-robin "reports did not reach both backends: $(grep -E 'WARN' "$dir/agent/agent.log" | tail -2)"
    return
  fi

  # Backend A dies.
  local before_a killed
  before_a=$(status_walls "$a")
  killed=$(now_s)
  kill -KILL "$a_pid"
  wait "$a_pid" 2>/dev/null
  if wait_for 20 reports_after_at_least "$b" "$killed" 5; then
    pass haproxy-backend-dies
  else
    fail haproxy-backend-dies "fewer than 5 reports reached B in 20 s after A died"
  fi
  local gap
  gap=$( { echo "$before_a"; status_walls "$b"; } | sort -n | awk -v k="$killed" '
    $1 > k - 5 { if (prev && $1 - prev > max) max = $1 - prev; prev = $1 }
    END { printf "%.2f", max }')
  figure "haproxy failover: longest gap between answered reports around the failure ${gap} s (step 1 s)"

  # A comes back on the same port: reports reach it again, and B keeps getting its share.
  local back
  "$REFSERVER" --listen "127.0.0.1:$a" --step 1 --adopt >"$dir/a/refserver-again.log" 2>&1 &
  track $!
  back=$(now_s)
  if wait_for 10 port_open "$a" && wait_for 30 reports_after_at_least "$a" 0 2 &&
    wait_for 10 reports_after_at_least "$b" "$back" 2; then
    pass haproxy-backend-returns
  else
    fail haproxy-backend-returns "reports did not reach A again after it came back"
  fi
  if [ "$(agent_json "$b" "a['registrations']")" -le 3 ]; then
    pass haproxy-no-registration-storm
  else
    fail haproxy-no-registration-storm "B saw $(agent_json "$b" "a['registrations']") registrations"
  fi
}

# tests/interop/daemons.sh: real daemons as child agents. redis-server and nginx (a
# master with workers) are packaged as child agents and installed by jobs with limits;
# kill -9 restarts them; stress-ng's worker exceeding the memory limit is reported as a
# `killed` event while the child stays running; stopping leaves no process, and so does
# a SIGKILL of BootAgent followed by a new start (never two instances, no stray worker
# holding the port).

# count_matching PATTERN: how many processes' command lines match PATTERN (pgrep -f).
count_matching() {
  pgrep -f -- "$1" | wc -l
}

redis_pong() {
  [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

http_ok() {
  curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$1/"
}

# event_seen PORT NAME KIND: the server got an event KIND for child NAME.
event_seen() {
  agent_json "$1" "any(e.get('name') == '$2' and e.get('event') == '$3' for e in a['events'])"
}

# new_pid PORT NAME OLD: the child NAME runs with a pid other than OLD.
new_pid() {
  local p
  p=$(child_field "$1" "$2" pid)
  [ -n "$p" ] && [ "$p" != "$3" ] && [ "$p" != 0 ]
}

none_matching() {
  ! pgrep -f -- "$1" >/dev/null
}

case_daemons() {
  local dir=$1
  local files="$dir/files" web="$dir/web"
  mkdir -p "$files" "$web/logs" "$web/tmp"
  chmod 0755 "$dir" "$files" "$web"
  echo "hello from a child agent" >"$web/index.html"
  start_refserver "$dir" --step 1 --files "$files" || {
    fail daemons "reference server did not start"
    return
  }
  local rs=$RS_PORT redis_port nginx_port
  redis_port=$(free_port)
  nginx_port=$(free_port)
  # [x]yz: a pattern that does not match the command line of the pgrep that uses it.
  one_master() { [ "$(count_matching "[n]ginx: master process nginx -p $web")" = 1 ]; }
  one_redis() { [ "$(count_matching "[r]edis-server.*:$redis_port")" = 1 ]; }
  cat >"$web/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $web/nginx.pid;
error_log $web/logs/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $web/tmp/body;
  proxy_temp_path $web/tmp/proxy;
  fastcgi_temp_path $web/tmp/fastcgi;
  uwsgi_temp_path $web/tmp/uwsgi;
  scgi_temp_path $web/tmp/scgi;
  server { listen 127.0.0.1:$nginx_port; root $web; }
}
EOF
  local redis_pkg nginx_pkg stress_pkg
  redis_pkg=$(make_package "$files" redis 7.0 "#!/bin/sh
exec redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize no")
  nginx_pkg=$(make_package "$files" web 1.22 "#!/bin/sh
exec nginx -p $web -c $web/nginx.conf")
  stress_pkg=$(make_package "$files" stress 1.0 "#!/bin/sh
exec stress-ng --vm 1 --vm-bytes 96M --vm-keep --timeout 0")

  start_agent "$dir/agent" -S "127.0.0.1:$rs"
  if ! wait_for 20 registered "$rs"; then
    fail daemons "the agent did not register"
    return
  fi
  local id code
  id=$(admin_job "$rs" "$(install_job redis "http://127.0.0.1:$rs/files/redis-7.0.tar.gz" "$redis_pkg" ', "limits": {"memory": "128M", "CPU": "50%"}')")
  code=$(wait_job "$rs" "$id" 30)
  if [ "$code" = 0 ] && wait_for 10 redis_pong "$redis_port"; then
    pass daemons-redis-installed
  else
    fail daemons-redis-installed "errcode '${code:-none}' ($(job_message "$rs" "$id")), or redis does not answer PING"
  fi
  id=$(admin_job "$rs" "$(install_job web "http://127.0.0.1:$rs/files/web-1.22.tar.gz" "$nginx_pkg" ', "limits": {"memory": "64M"}')")
  code=$(wait_job "$rs" "$id" 30)
  if [ "$code" = 0 ] && wait_for 10 http_ok "$nginx_port"; then
    pass daemons-nginx-installed
  else
    fail daemons-nginx-installed "errcode '${code:-none}' ($(job_message "$rs" "$id")), or nginx does not answer: $(tail -2 "$web/logs/error.log" 2>/dev/null)"
  fi

  # kill -9 of each main process: restarted, answering again, one instance.
  local pid new
  pid=$(child_field "$rs" redis pid)
  kill -KILL "$pid" 2>/dev/null
  if wait_for 15 new_pid "$rs" redis "$pid" && wait_for 10 redis_pong "$redis_port" &&
    wait_for 5 one_redis; then
    pass daemons-redis-kill9-restarted
  else
    fail daemons-redis-kill9-restarted "redis was not restarted once after kill -9 (processes: $(count_matching "[r]edis-server.*:$redis_port"))"
  fi
  pid=$(child_field "$rs" web pid)
  kill -KILL "$pid" 2>/dev/null
  sleep 1
  if wait_for 15 new_pid "$rs" web "$pid" && wait_for 20 http_ok "$nginx_port" && wait_for 10 one_master; then
    pass daemons-nginx-kill9-restarted
  else
    fail daemons-nginx-kill9-restarted "nginx did not come back with one master after kill -9 of its master (masters: $(count_matching "[n]ginx: master process nginx -p $web"); $(tail -1 "$web/logs/error.log" 2>/dev/null))"
  fi
  if [ "$(child_field "$rs" web status)" = running ]; then
    pass daemons-nginx-running
  else
    fail daemons-nginx-running "nginx is $(child_field "$rs" web status) after the restart"
  fi

  # A worker over the memory limit: stress-ng's master lives, its worker is killed.
  id=$(admin_job "$rs" "$(install_job stress "http://127.0.0.1:$rs/files/stress-1.0.tar.gz" "$stress_pkg" ', "limits": {"memory": "48M"}')")
  code=$(wait_job "$rs" "$id" 30)
  if [ "$code" = 0 ] && wait_for 30 event_seen "$rs" stress killed; then
    local ev
    ev=$(agent_json "$rs" "next(e for e in a['events'] if e.get('name') == 'stress' and e.get('event') == 'killed')")
    if [ "$(child_field "$rs" stress status)" = running ]; then
      pass daemons-worker-memory-kill
    else
      fail daemons-worker-memory-kill "the child is $(child_field "$rs" stress status), not running, after its worker was killed: $ev"
    fi
    echo "  event: $ev" >&2
  else
    fail daemons-worker-memory-kill "no killed event for stress-ng's worker in 30 s (errcode '${code:-none}', status $(child_field "$rs" stress status))"
  fi
  id=$(admin_job "$rs" '{"action": "uninstall", "name": "stress"}')
  wait_job "$rs" "$id" 30 >/dev/null
  if wait_for 10 none_matching "[s]tress-ng"; then
    pass daemons-uninstall-leaves-nothing
  else
    fail daemons-uninstall-leaves-nothing "stress-ng processes left after uninstall: $(pgrep -x stress-ng | tr '\n' ' ')"
  fi

  # BootAgent SIGKILLed, then started again: the predecessor's leftovers are ended, one
  # instance of each daemon runs, the port is served.
  kill -KILL "$AGENT_PID"
  wait "$AGENT_PID" 2>/dev/null
  sleep 1
  local left
  left=$(count_matching "[n]ginx: worker process")
  start_agent "$dir/agent"
  if wait_for 30 http_ok "$nginx_port" && wait_for 30 redis_pong "$redis_port" &&
    wait_for 15 one_master && wait_for 5 one_redis; then
    pass daemons-after-agent-sigkill
  else
    fail daemons-after-agent-sigkill "after a SIGKILL of BootAgent and a new start: nginx masters $(count_matching "[n]ginx: master process nginx -p $web"), redis $(count_matching "[r]edis-server.*:$redis_port") (workers left behind by the kill: $left); $(tail -1 "$web/logs/error.log" 2>/dev/null)"
  fi
  if wait_for 20 child_running "$rs" web && [ "$(child_field "$rs" web status)" = running ]; then
    pass daemons-nginx-not-crashlooping
  else
    fail daemons-nginx-not-crashlooping "nginx is $(child_field "$rs" web status) after the new start"
  fi

  # Stop jobs and BootAgent's shutdown leave no process.
  id=$(admin_job "$rs" '{"action": "stop", "name": "web"}')
  wait_job "$rs" "$id" 30 >/dev/null
  if wait_for 15 none_matching "[n]ginx -p $web" && wait_for 5 none_matching "[n]ginx: worker process"; then
    pass daemons-stop-leaves-nothing
  else
    fail daemons-stop-leaves-nothing "nginx processes left after a stop job: $(pgrep -af '[n]ginx' | tr '\n' ';')"
  fi
  kill -TERM "$AGENT_PID"
  wait_for 20 gone "$AGENT_PID"
  if wait_for 10 none_matching "[r]edis-server.*:$redis_port"; then
    pass daemons-shutdown-leaves-nothing
  else
    fail daemons-shutdown-leaves-nothing "redis-server left after BootAgent's shutdown"
  fi
}

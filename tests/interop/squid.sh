# tests/interop/squid.sh: Squid with Debian's default squid.conf (its access rules
# untouched: CONNECT only to port 443) between BootAgent and its servers. Plain http goes
# through it in absolute form, https through CONNECT, NO_PROXY bypasses it; checked in
# Squid's access log.

# squid_start DIR: Debian's squid.conf with only the port, the pid file, the logs and
# the core directory moved into DIR; sets SQUID_PORT and SQUID_LOG.
squid_start() {
  local dir=$1/squid
  mkdir -p "$dir/logs"
  chown proxy "$dir/logs" 2>/dev/null || chmod 0777 "$dir/logs"
  SQUID_PORT=$(free_port)
  SQUID_LOG=$dir/logs/access.log
  sed -e "s|^http_port 3128\$|http_port 127.0.0.1:$SQUID_PORT|" \
    -e "s|^coredump_dir .*|coredump_dir $dir|" \
    /etc/squid/squid.conf >"$dir/squid.conf"
  cat >>"$dir/squid.conf" <<EOF
pid_filename $dir/squid.pid
access_log stdio:$SQUID_LOG
cache_log $dir/logs/cache.log
shutdown_lifetime 1 seconds
EOF
  grep -q "^http_port 127.0.0.1:$SQUID_PORT\$" "$dir/squid.conf" || return 1
  grep -q '^http_access deny CONNECT !SSL_ports$' "$dir/squid.conf" || return 1
  squid -N -f "$dir/squid.conf" >"$dir/logs/stdout" 2>&1 &
  track $!
  wait_for 20 port_open "$SQUID_PORT"
}

# squid_saw PATTERN: Squid's access log has a line matching PATTERN (extended regex).
squid_saw() {
  grep -Eq "$1" "$SQUID_LOG" 2>/dev/null
}

case_squid() {
  local dir=$1
  declare -F make_ca >/dev/null || . tests/interop/nginx.sh
  if ! squid_start "$dir"; then
    fail squid "squid did not start: $(tail -3 "$dir/squid/logs/cache.log" 2>/dev/null)"
    return
  fi
  local files="$dir/files"
  mkdir -p "$files"
  chmod 0755 "$dir" "$files"
  start_refserver "$dir" --step 1 --files "$files" || {
    fail squid "reference server did not start"
    return
  }
  local rs=$RS_PORT proxy="http://127.0.0.1:$SQUID_PORT"

  # Control traffic over plain http, through the proxy, in absolute form.
  HTTP_PROXY=$proxy start_agent "$dir/plain" -S "127.0.0.1:$rs"
  if wait_for 20 reports_at_least "$rs" 1 &&
    wait_for 5 squid_saw "POST http://127.0.0.1:$rs/agent/register "; then
    pass squid-http-absolute-form
  else
    fail squid-http-absolute-form "no register in absolute form through Squid: $(grep -E 'WARN|ERROR' "$dir/plain/agent.log" | tail -2)"
  fi
  if squid_saw "POST http://127.0.0.1:$rs/agent/status "; then
    pass squid-http-status
  else
    fail squid-http-status "Squid's access log has no status report"
  fi
  if squid_saw "CONNECT 127.0.0.1:$rs"; then
    fail squid-no-connect-for-http "plain http was tunnelled with CONNECT"
  else
    pass squid-no-connect-for-http
  fi

  # A download over plain http through the proxy; its throughput beside curl's.
  local pkg id code
  pkg=$(make_package "$files" viasquid 1.0 'exec sleep 100000')
  id=$(admin_job "$rs" "$(install_job viasquid "http://127.0.0.1:$rs/files/viasquid-1.0.tar.gz" "$pkg")")
  code=$(wait_job "$rs" "$id" 30)
  if [ "$code" = 0 ] && squid_saw "GET http://127.0.0.1:$rs/files/viasquid-1.0.tar.gz "; then
    pass squid-http-download
  else
    fail squid-http-download "errcode '${code:-none}' ($(job_message "$rs" "$id")), or Squid did not log the GET"
  fi
  head -c $((64 << 20)) /dev/urandom >"$files/big.bin"
  local t0 t1
  t0=$(now_s)
  curl -fsS -x "$proxy" -o "$dir/big.curl" "http://127.0.0.1:$rs/files/big.bin" && sha256sum "$dir/big.curl" >/dev/null
  t1=$(now_s)
  rm -f "$dir/big.curl"
  figure "squid download 64 MiB, curl -x + sha256sum: $(elapsed_s "$t0" "$t1") s"
  id=$(admin_job "$rs" "{\"action\": \"install\", \"name\": \"big\", \"url\": \"http://127.0.0.1:$rs/files/big.bin\", \"checksum\": \"SHA256:$(printf '0%.0s' {1..64})\"}")
  code=$(wait_job "$rs" "$id" 60)
  if [ "$code" = 3 ]; then
    figure "squid download 64 MiB, BootAgent (job queued to refused, from its log): $(job_seconds "$dir/plain/agent.log" "$id") s"
  else
    fail squid-download-big "a 64 MiB download through Squid gave errcode '${code:-none}'"
  fi
  rm -f "$files/big.bin"
  end_agent_of plain

  # NO_PROXY: the same server, not through the proxy.
  local lines_before
  lines_before=$(wc -l <"$SQUID_LOG")
  start_refserver "$dir/noproxy" --step 1 || return
  local rs2=$RS_PORT
  HTTP_PROXY=$proxy NO_PROXY=127.0.0.1 start_agent "$dir/noproxy" -S "127.0.0.1:$rs2"
  if wait_for 20 reports_at_least "$rs2" 1 && ! tail -n +"$((lines_before + 1))" "$SQUID_LOG" | grep -q ":$rs2/"; then
    pass squid-no-proxy-bypass
  else
    fail squid-no-proxy-bypass "with NO_PROXY=127.0.0.1 the agent did not report directly"
  fi
  end_agent_of noproxy
  # Lowercase variable.
  start_refserver "$dir/lower" --step 1 || return
  local rs3=$RS_PORT
  http_proxy=$proxy start_agent "$dir/lower" -S "127.0.0.1:$rs3"
  if wait_for 20 reports_at_least "$rs3" 1 && wait_for 5 squid_saw "POST http://127.0.0.1:$rs3/agent/"; then
    pass squid-lowercase-http-proxy
  else
    fail squid-lowercase-http-proxy "http_proxy (lowercase) was not used"
  fi
  end_agent_of lower

  # https through CONNECT to port 443 (nginx with the fleet's CA, in front of the server).
  if ! make_ca "$dir"; then
    fail squid-https-connect "openssl could not make the certificates"
    return
  fi
  CA_DIR="$dir/ca"
  start_refserver "$dir/tls" --step 1 || return
  if port_open 443; then
    fail squid-https-connect "port 443 on 127.0.0.1 is taken by another program"
    return
  fi
  nginx_start "$dir/tls" "$(tls_server 443 server "TLSv1.2 TLSv1.3" "")"
  if ! wait_for 10 port_open 443; then
    fail squid-https-connect "nginx did not listen on 443"
    return
  fi
  HTTPS_PROXY=$proxy BOOTAGENT_BIN=$BOOTAGENT_TLS start_agent "$dir/https" -S "https://127.0.0.1:443" -C "$CA_DIR/ca.pem"
  if wait_for 20 reports_at_least "$RS_PORT" 1 && squid_saw "CONNECT 127.0.0.1:443 "; then
    pass squid-https-connect
  else
    fail squid-https-connect "no report through CONNECT: $(grep -E 'WARN|ERROR' "$dir/https/agent.log" | tail -2)"
  fi
  end_agent_of https
}

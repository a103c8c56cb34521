# tests/interop/nginx.sh: nginx serving packages (with redirects), in front of the
# reference server as a reverse proxy, and over HTTPS with the fleet's own CA.

# nginx_start DIR CONF_BODY: runs nginx in the foreground with CONF_BODY as its http{}
# block, files under DIR; tracked.
nginx_start() {
  local dir=$1 body=$2
  mkdir -p "$dir/nginx/logs" "$dir/nginx/tmp"
  cat >"$dir/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log warn;
events { worker_connections 64; }
http {
  access_log $dir/nginx/logs/access.log;
  client_body_temp_path $dir/nginx/tmp/body;
  proxy_temp_path $dir/nginx/tmp/proxy;
  fastcgi_temp_path $dir/nginx/tmp/fastcgi;
  uwsgi_temp_path $dir/nginx/tmp/uwsgi;
  scgi_temp_path $dir/nginx/tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
$body
}
EOF
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >"$dir/nginx/logs/stdout" 2>&1 &
  track $!
}

# make_ca DIR: a fleet CA, certificates for 127.0.0.1 (good, expired, wrong name), a
# client certificate, and a second CA the servers do not use.
make_ca() {
  local d=$1/ca
  mkdir -p "$d/newcerts"
  : >"$d/index.txt"
  echo 01 >"$d/serial"
  cat >"$d/ca.cnf" <<EOF
[ ca ]
default_ca = fleet
[ fleet ]
dir = $d
database = $d/index.txt
new_certs_dir = $d/newcerts
serial = $d/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
EOF
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" \
    -days 30 -subj "/CN=BootAgent interop fleet CA" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/other.key" -out "$d/other.pem" \
    -days 30 -subj "/CN=another CA" 2>/dev/null
  # name SAN EKU START END
  sign() {
    openssl req -newkey rsa:2048 -nodes -keyout "$d/$1.key" -out "$d/$1.csr" \
      -subj "/CN=$1" -addext "subjectAltName=$2" -addext "extendedKeyUsage=$3" 2>/dev/null
    openssl ca -batch -config "$d/ca.cnf" -cert "$d/ca.pem" -keyfile "$d/ca.key" \
      -in "$d/$1.csr" -out "$d/$1.pem" -startdate "$4" -enddate "$5" >/dev/null 2>&1
  }
  local start end
  start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
  end=$(date -u -d '+30 days' +%Y%m%d%H%M%SZ)
  sign server "IP:127.0.0.1,DNS:localhost" serverAuth "$start" "$end"
  sign wrongname "DNS:wrong.example" serverAuth "$start" "$end"
  sign expired "IP:127.0.0.1,DNS:localhost" serverAuth 20200101000000Z 20200201000000Z
  sign client "DNS:edge-agent" clientAuth "$start" "$end"
  [ -s "$d/server.pem" ] && [ -s "$d/expired.pem" ] && [ -s "$d/client.pem" ] &&
    [ -s "$d/wrongname.pem" ]
}

# tls_server PORT CERT PROTOCOLS EXTRA: an https server{} proxying to the reference server.
tls_server() {
  cat <<EOF
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $CA_DIR/$2.pem;
    ssl_certificate_key $CA_DIR/$2.key;
    ssl_protocols $3;
    $4
    location /agent/ { proxy_pass http://127.0.0.1:$RS_PORT; }
  }
EOF
}

# tls_agent NAME PORT ARGS...: an agent of its own against https://127.0.0.1:PORT.
tls_agent() {
  local name=$1 port=$2
  shift 2
  BOOTAGENT_BIN=$BOOTAGENT_TLS start_agent "$DIR/$name" -S "https://127.0.0.1:$port" "$@"
}

case_nginx() {
  DIR=$1
  local files="$DIR/files"
  mkdir -p "$files"
  chmod 0755 "$DIR" "$files"

  # --- downloads through redirects, and nginx as a reverse proxy for control traffic
  start_refserver "$DIR" --step 1 || {
    fail nginx "reference server did not start"
    return
  }
  local http_port rp_port
  http_port=$(free_port)
  rp_port=$(free_port)
  nginx_start "$DIR" "
  server {
    listen 127.0.0.1:$http_port;
    root $DIR;
    location /files/ { }
    location ~ ^/r301/(.*)\$ { return 301 /files/\$1; }
    location ~ ^/r302/(.*)\$ { return 302 /files/\$1; }
    location ~ ^/r307/(.*)\$ { return 307 /files/\$1; }
    location ~ ^/r308/(.*)\$ { return 308 http://127.0.0.1:$http_port/files/\$1; }
    location ~ ^/chain/(.*)\$ { return 302 /r301/\$1; }
  }
  server {
    listen 127.0.0.1:$rp_port;
    location /agent/ { proxy_pass http://127.0.0.1:$RS_PORT; }
  }"
  if ! wait_for 10 port_open "$rp_port"; then
    fail nginx "nginx did not start: $(tail -3 "$DIR/nginx/logs/error.log" 2>/dev/null)"
    return
  fi
  start_agent "$DIR/agent" -S "127.0.0.1:$rp_port"
  if wait_for 20 reports_at_least "$RS_PORT" 2; then
    pass nginx-reverse-proxy
  else
    fail nginx-reverse-proxy "no registration and report through nginx in 20 s"
    return
  fi
  if grep -q 'POST /agent/status' "$DIR/nginx/logs/access.log"; then
    pass nginx-reverse-proxy-log
  else
    fail nginx-reverse-proxy-log "nginx's access log has no POST /agent/status"
  fi

  local pkg code kind
  pkg=$(make_package "$files" redir 1.0 'exec sleep 100000')
  for kind in r301 r302 r307 r308 chain; do
    local id
    id=$(admin_job "$RS_PORT" "$(install_job "$kind" "http://127.0.0.1:$http_port/$kind/redir-1.0.tar.gz" "$pkg")")
    code=$(wait_job "$RS_PORT" "$id" 30)
    if [ "$code" = 0 ] && wait_for 10 child_running "$RS_PORT" "$kind"; then
      pass "nginx-redirect-$kind"
    else
      fail "nginx-redirect-$kind" "install through /$kind/ gave errcode '${code:-none}': $(job_message "$RS_PORT" "$id")"
    fi
  done

  # Throughput: a 128 MiB file with a wrong checksum is downloaded and hashed whole,
  # then refused (errcode 3); the agent's job time against curl + sha256sum.
  head -c $((128 << 20)) /dev/urandom >"$files/big.bin"
  local t0 t1 id
  t0=$(now_s)
  curl -fsS -o "$DIR/big.curl" "http://127.0.0.1:$http_port/files/big.bin" && sha256sum "$DIR/big.curl" >/dev/null
  t1=$(now_s)
  rm -f "$DIR/big.curl"
  figure "nginx download 128 MiB, curl + sha256sum: $(elapsed_s "$t0" "$t1") s"
  id=$(admin_job "$RS_PORT" "{\"action\": \"install\", \"name\": \"big\", \"url\": \"http://127.0.0.1:$http_port/files/big.bin\", \"checksum\": \"SHA256:$(printf '0%.0s' {1..64})\"}")
  code=$(wait_job "$RS_PORT" "$id" 60)
  if [ "$code" = 3 ]; then
    figure "nginx download 128 MiB, BootAgent (job queued to refused, from its log): $(job_seconds "$DIR/agent/agent.log" "$id") s"
    pass nginx-download-big
  else
    fail nginx-download-big "a 128 MiB download with a wrong checksum gave errcode '${code:-none}'"
  fi
  rm -f "$files/big.bin"
  end_tracked

  # --- HTTPS with the fleet's own CA
  if ! make_ca "$DIR"; then
    fail nginx-tls "openssl could not make the certificates"
    return
  fi
  CA_DIR="$DIR/ca"
  start_refserver "$DIR/tls" --step 1 || return
  local rs_tls=$RS_PORT p12 p13 pm pexp pwrong
  p12=$(free_port)
  p13=$(free_port)
  pm=$(free_port)
  pexp=$(free_port)
  pwrong=$(free_port)
  nginx_start "$DIR/tls" "$(tls_server "$p12" server TLSv1.2 "")
$(tls_server "$p13" server TLSv1.3 "")
$(tls_server "$pm" server "TLSv1.2 TLSv1.3" "ssl_verify_client on; ssl_client_certificate $CA_DIR/ca.pem;")
$(tls_server "$pexp" expired "TLSv1.2 TLSv1.3" "")
$(tls_server "$pwrong" wrongname "TLSv1.2 TLSv1.3" "")"
  if ! wait_for 10 port_open "$pwrong"; then
    fail nginx-tls "nginx (TLS) did not start: $(tail -3 "$DIR/tls/nginx/logs/error.log" 2>/dev/null)"
    return
  fi

  # TLS 1.2 only, TLS 1.3 only, mutual TLS: each registers and reports.
  local before
  tls_agent tls12 "$p12" -C "$CA_DIR/ca.pem"
  if wait_for 20 reports_at_least "$rs_tls" 1; then pass nginx-tls12; else fail nginx-tls12 "no report over TLS 1.2: $(tail -2 "$DIR/tls12/agent.log")"; fi
  end_agent_of tls12
  before=$(total_reports "$rs_tls")
  tls_agent tls13 "$p13" -C "$CA_DIR/ca.pem"
  if wait_for 20 total_reports_at_least "$rs_tls" $((before + 1)); then pass nginx-tls13; else fail nginx-tls13 "no report over TLS 1.3 only: $(tail -2 "$DIR/tls13/agent.log")"; fi
  end_agent_of tls13
  before=$(total_reports "$rs_tls")
  tls_agent mtls "$pm" -C "$CA_DIR/ca.pem" --client-cert "$CA_DIR/client.pem" --client-key "$CA_DIR/client.key"
  if wait_for 20 total_reports_at_least "$rs_tls" $((before + 1)); then pass nginx-mtls; else fail nginx-mtls "no report with a client certificate: $(tail -2 "$DIR/mtls/agent.log")"; fi
  end_agent_of mtls

  # Refusals: one clear line each, and nothing reaches the server.
  refused() { # NAME PORT PATTERN ARGS...
    local name=$1 port=$2 pattern=$3 n
    shift 3
    tls_agent "$name" "$port" "$@"
    if wait_for 15 log_has "$DIR/$name/agent.log" "$pattern"; then
      sleep 3 # let the backoff retry a few times: the line must not repeat per attempt
      n=$(grep -E '\[(WARN|ERROR)\]' "$DIR/$name/agent.log" | grep -Ec "$pattern")
      if [ "$n" -le 2 ]; then
        pass "nginx-tls-refused-$name"
      else
        fail "nginx-tls-refused-$name" "the refusal was logged $n times in a few seconds (warnings)"
      fi
    else
      fail "nginx-tls-refused-$name" "no log line matching '$pattern': $(tail -2 "$DIR/$name/agent.log")"
    fi
    end_agent_of "$name"
  }
  before=$(agents_json "$rs_tls" | python3 -c 'import json,sys; print(sum(a["reports"] + a["registrations"] for a in json.load(sys.stdin)))')
  refused wrongca "$p12" "unknown issuer" -C "$CA_DIR/other.pem"
  refused expired "$pexp" "expired" -C "$CA_DIR/ca.pem"
  refused wrongname "$pwrong" "wrong host name" -C "$CA_DIR/ca.pem"
  # nginx completes the handshake without a client certificate and answers 400.
  refused nocert "$pm" "client certificate refused|HTTP 400" -C "$CA_DIR/ca.pem"
  if [ "$(agents_json "$rs_tls" | python3 -c 'import json,sys; print(sum(a["reports"] + a["registrations"] for a in json.load(sys.stdin)))')" = "$before" ]; then
    pass nginx-tls-refused-nothing-sent
  else
    fail nginx-tls-refused-nothing-sent "a refused agent's request reached the server"
  fi
}

# end_agent_of NAME: stops the last agent started (SIGTERM, waits).
end_agent_of() {
  kill -TERM "$AGENT_PID" 2>/dev/null
  wait_for 10 gone "$AGENT_PID"
  wait "$AGENT_PID" 2>/dev/null || true
}

# job_seconds LOG ID: from the agent's log, the seconds between "job ID queued" and the
# job's result line.
job_seconds() {
  python3 - "$1" "$2" <<'EOF'
import re, sys
from datetime import datetime
log, job = sys.argv[1], sys.argv[2]
start = end = None
for line in open(log, errors="replace"):
    if job not in line:
        continue
    m = re.match(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)", line)
    if not m:
        continue
    t = datetime.fromisoformat(m.group(1).replace(" ", "T"))
    if start is None:
        start = t
    end = t
print(f"{(end - start).total_seconds():.2f}" if start and end else "?")
EOF
}

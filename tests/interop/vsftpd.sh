# tests/interop/vsftpd.sh: ftp:// installs from vsftpd, anonymous and with a user whose
# password holds ':' and '@' (percent-encoded in the URL), in passive mode; a wrong
# password (530) and a missing file (550) give errcode 2.

readonly FTP_USER=bootagent-ftp
readonly FTP_PASSWORD='se:cr@t'
readonly FTP_PASSWORD_URL='se%3Acr%40t'

ftp_user_remove() {
  userdel "$FTP_USER" >/dev/null 2>&1 || true
}

case_vsftpd() {
  local dir=$1
  local anon="$dir/anon" home="$dir/home" port pasv
  mkdir -p "$anon" "$home" "$dir/empty"
  chmod 0755 "$dir" "$anon" "$dir/empty"
  port=$(free_port)
  pasv=$(python3 -c 'import random; print(random.randrange(40000, 60000, 10))')

  ftp_user_remove
  if ! useradd --home-dir "$home" --no-create-home --shell /bin/sh "$FTP_USER" ||
    ! printf '%s:%s\n' "$FTP_USER" "$FTP_PASSWORD" | chpasswd; then
    fail vsftpd "cannot create the FTP user $FTP_USER"
    return
  fi
  chown "$FTP_USER" "$home"
  chmod 0755 "$home"

  cat >"$dir/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
anonymous_enable=YES
anon_root=$anon
no_anon_password=YES
local_enable=YES
local_root=$home
write_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$pasv
pasv_max_port=$((pasv + 9))
port_enable=NO
secure_chroot_dir=$dir/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
xferlog_enable=YES
xferlog_std_format=NO
vsftpd_log_file=$dir/vsftpd.log
EOF
  vsftpd "$dir/vsftpd.conf" >"$dir/vsftpd.stdout" 2>&1 &
  track $!
  if ! wait_for 10 port_open "$port"; then
    fail vsftpd "vsftpd did not listen: $(cat "$dir/vsftpd.stdout")"
    ftp_user_remove
    return
  fi

  start_refserver "$dir" --step 1 || {
    fail vsftpd "reference server did not start"
    ftp_user_remove
    return
  }
  start_agent "$dir/agent" -S "127.0.0.1:$RS_PORT"
  if ! wait_for 20 registered "$RS_PORT"; then
    fail vsftpd "the agent did not register"
    ftp_user_remove
    return
  fi

  local pkg_a pkg_u id code
  pkg_a=$(make_package "$anon" ftpanon 1.0 'exec sleep 100000')
  pkg_u=$(make_package "$home" ftpuser 2.0 'exec sleep 100000')
  chmod 0644 "$pkg_a" "$pkg_u"

  id=$(admin_job "$RS_PORT" "$(install_job ftpanon "ftp://127.0.0.1:$port/ftpanon-1.0.tar.gz" "$pkg_a")")
  code=$(wait_job "$RS_PORT" "$id" 30)
  if [ "$code" = 0 ] && wait_for 10 child_running "$RS_PORT" ftpanon; then
    pass vsftpd-anonymous
  else
    fail vsftpd-anonymous "errcode '${code:-none}': $(job_message "$RS_PORT" "$id")"
  fi

  id=$(admin_job "$RS_PORT" "$(install_job ftpuser "ftp://$FTP_USER:$FTP_PASSWORD_URL@127.0.0.1:$port/ftpuser-2.0.tar.gz" "$pkg_u")")
  code=$(wait_job "$RS_PORT" "$id" 30)
  if [ "$code" = 0 ] && wait_for 10 child_running "$RS_PORT" ftpuser &&
    [ "$(child_field "$RS_PORT" ftpuser version)" = 2.0 ]; then
    pass vsftpd-user-password
  else
    fail vsftpd-user-password "errcode '${code:-none}': $(job_message "$RS_PORT" "$id")"
  fi
  if grep -q "$FTP_USER" "$dir/vsftpd.log" 2>/dev/null && grep -q 'OK LOGIN' "$dir/vsftpd.log"; then
    pass vsftpd-login-logged
  else
    fail vsftpd-login-logged "vsftpd's log shows no login of $FTP_USER"
  fi

  id=$(admin_job "$RS_PORT" "$(install_job ftpbad "ftp://$FTP_USER:wrong@127.0.0.1:$port/ftpuser-2.0.tar.gz" "$pkg_u")")
  code=$(wait_job "$RS_PORT" "$id" 30)
  if [ "$code" = 2 ] && job_message "$RS_PORT" "$id" | grep -q 530; then
    pass vsftpd-530
  else
    fail vsftpd-530 "a wrong password gave errcode '${code:-none}': $(job_message "$RS_PORT" "$id")"
  fi

  id=$(admin_job "$RS_PORT" "$(install_job ftpmissing "ftp://127.0.0.1:$port/missing-1.0.tar.gz" "$pkg_a")")
  code=$(wait_job "$RS_PORT" "$id" 30)
  if [ "$code" = 2 ] && job_message "$RS_PORT" "$id" | grep -q 550; then
    pass vsftpd-550
  else
    fail vsftpd-550 "a missing file gave errcode '${code:-none}': $(job_message "$RS_PORT" "$id")"
  fi
  if [ ! -e "$dir/agent/data/agents/ftpbad" ] && [ ! -e "$dir/agent/data/agents/ftpmissing" ]; then
    pass vsftpd-failures-leave-nothing
  else
    fail vsftpd-failures-leave-nothing "a failed ftp install left files under agents/"
  fi
  end_tracked
  ftp_user_remove
}

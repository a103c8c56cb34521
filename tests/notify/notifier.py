#!/usr/bin/env python3
"""A daemon that speaks systemd's notify protocol the way libsystemd's sd_notify(3) does,
for BootAgent's tests of `notify` health (docs/protocol.md section 6, "Health").

It sends datagrams of KEY=VALUE lines to the socket named by NOTIFY_SOCKET (a path, or
an abstract name when it starts with "@"), on the schedule its arguments give:

  --status TEXT       STATUS=TEXT at start
  --ready-after S     READY=1 after S seconds (without it: never ready)
  --mainpid           MAINPID=<its own pid> along with READY=1
  --watchdog-every S  WATCHDOG=1 every S seconds; "auto" is half of WATCHDOG_USEC, and
                      like sd_watchdog_enabled(3) only when WATCHDOG_PID is unset or is
                      this process (so `run` should `exec` it)
  --watchdog-for S    stop sending WATCHDOG=1 after S seconds (then it seems hung)
  --flood N           N datagrams STATUS=flood I at start, as fast as it can
  --exit-after S      exit 0 after S seconds (without it: run until killed)

Each datagram sent is said on stdout ("notifier: sent READY=1"). Without NOTIFY_SOCKET
it exits with status 2. Example `run` script:

  #!/bin/sh
  exec python3 /path/to/notifier.py --status starting --ready-after 1 --watchdog-every auto
"""
import argparse
import os
import socket
import sys
import time


def address(value):
    if value.startswith("@"):
        return "\0" + value[1:]
    return value


def main():
    parser = argparse.ArgumentParser(description="sd_notify test daemon")
    parser.add_argument("--status")
    parser.add_argument("--ready-after", type=float)
    parser.add_argument("--mainpid", action="store_true")
    parser.add_argument("--watchdog-every")
    parser.add_argument("--watchdog-for", type=float)
    parser.add_argument("--flood", type=int, default=0)
    parser.add_argument("--exit-after", type=float)
    args = parser.parse_args()

    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        print("notifier: NOTIFY_SOCKET is not set", flush=True)
        sys.exit(2)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(text, quiet=False):
        try:
            sock.sendto(text.encode(), address(target))
            if not quiet:
                print("notifier: sent " + text.replace("\n", " "), flush=True)
        except OSError as err:
            print("notifier: sending %r: %s" % (text, err), flush=True)

    watchdog = None
    if args.watchdog_every == "auto":
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if usec and (pid is None or pid == str(os.getpid())):
            watchdog = int(usec) / 2e6
        else:
            print("notifier: watchdog off (WATCHDOG_USEC=%s WATCHDOG_PID=%s, my pid %d)"
                  % (usec, pid, os.getpid()), flush=True)
    elif args.watchdog_every:
        watchdog = float(args.watchdog_every)

    start = time.monotonic()
    if args.status is not None:
        send("STATUS=" + args.status)
    for i in range(args.flood):
        send("STATUS=flood %d" % i, quiet=True)
    if args.flood:
        print("notifier: sent %d datagrams" % args.flood, flush=True)

    ready_at = None if args.ready_after is None else start + args.ready_after
    watchdog_next = None if watchdog is None else start
    watchdog_end = None if args.watchdog_for is None else start + args.watchdog_for
    exit_at = None if args.exit_after is None else start + args.exit_after
    while True:
        now = time.monotonic()
        if ready_at is not None and now >= ready_at:
            text = "READY=1"
            if args.mainpid:
                text += "\nMAINPID=%d" % os.getpid()
            send(text)
            ready_at = None
        if watchdog_next is not None and now >= watchdog_next:
            if watchdog_end is not None and now >= watchdog_end:
                print("notifier: no more WATCHDOG=1", flush=True)
                watchdog_next = None
            else:
                send("WATCHDOG=1", quiet=True)
                watchdog_next = now + watchdog
        if exit_at is not None and now >= exit_at:
            sys.exit(0)
        dues = [t for t in (ready_at, watchdog_next, exit_at) if t is not None]
        time.sleep(max(0.0, min(dues) - time.monotonic()) if dues else 3600)


if __name__ == "__main__":
    main()

#!/bin/bash
# Run a command with a system libvirtd available (qemu:///system), for machines without
# systemd (CI). If a system libvirtd already answers, it is used and left alone. Otherwise
# this script starts its own virtlogd (unless one listens on the system socket) and
# libvirtd, and stops exactly those processes (by pid, checked against their start time,
# never by name) when the command ends, fails, or the script is interrupted:
# * the daemons run in their own session, so a terminal's Ctrl-C reaches the command (which
#   may still need libvirtd to clean up) and not them; they are stopped after the command;
# * they (and the command) get SIGTERM if this script dies without running its traps
#   (SIGKILL): a parent-death signal (setpriv --pdeathsig);
# * its scratch files are gone once libvirtd answers, so even a SIGKILL leaves none.
#
# Our libvirtd runs in a private mount namespace, where three things are replaced:
# * qemu.conf runs QEMU as root (our domains ask for root anyway: <seclabel ... +0:+0>).
#   With Debian's default user libvirt-qemu and a root-only /dev/kvm (0600 root:root, as on
#   machines without udev rules), libvirt's capability cache never stays valid: its probe
#   of QEMU runs as root and finds KVM, its validity check asks whether libvirt-qemu may
#   open /dev/kvm and finds it may not, so every lookup (every connection, every domain
#   start) re-probes QEMU for ~8 s. Measured here: 7.9 s per `virsh capabilities`, then
#   0.02 s with this file.
# * the network and domain autostart folders are empty: no default network (virbr0,
#   dnsmasq) and no autostarted domain is started, so nothing of ours outlives this script.
# Nothing outside the namespace changes. Not root, or no libvirtd installed: the command
# just runs (qemu:///session needs no daemon of ours).
set -u

if [ "$(id -u)" -ne 0 ] || ! command -v libvirtd >/dev/null 2>&1; then
  exec "$@"
fi

SYSTEM_URI=qemu:///system
VIRTLOGD_SOCK=/run/libvirt/virtlogd-sock
# The pid in the name tells whose scratch folder it is.
work=$(mktemp -d "/tmp/bh-libvirtd.$$.XXXXXX")
our_pids=""      # "pid:start-time" of each daemon started here
libvirtd_pid=""
cmd_pid=""

answers() {  # does a system libvirtd answer on its socket right now?
  timeout 10 virsh -c "$SYSTEM_URI" version >/dev/null 2>&1
}

listening() {  # is there a unix socket at $1 (in our mount namespace) with a listener?
  [ -S "$1" ] && ss -xlnH 2>/dev/null | awk '{print $5}' | grep -qxF "$1"
}

start_time() {  # field 22 of /proc/PID/stat (after the ")" that ends the command name)
  local stat
  read -r stat 2>/dev/null < "/proc/$1/stat" || return 1
  set -- ${stat##*) }
  echo "${20}"
}

ours() {  # is "pid:start-time" still the process we started (not exited, not a recycled pid)?
  [ "$(start_time "${1%%:*}")" = "${1#*:}" ]
}

spawn() {  # start a daemon of ours: own session, SIGTERM when this script dies
  setsid setpriv --pdeathsig TERM "$@" &
  local pid=$! start
  if start=$(start_time "$pid"); then
    our_pids="$pid:$start $our_pids"
  fi
  spawned=$pid
}

domains_running() {
  timeout 10 virsh -c "$SYSTEM_URI" list --name 2>/dev/null | grep .
}

stop_ours() {
  trap '' INT TERM HUP  # a second signal must not cut the clean-up short
  if [ -n "$libvirtd_pid" ]; then
    # Domains created with AUTODESTROY go when their client's connection closes: give
    # libvirtd the time to do that (the command has just ended) before stopping it.
    i=0
    while domains_running >/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if left=$(domains_running); then
      echo "with-libvirtd.sh: domains still running when our libvirtd stops (a later libvirtd takes them over):" $left >&2
    fi
  fi
  for entry in $our_pids; do ours "$entry" && kill -TERM "${entry%%:*}" 2>/dev/null; done
  for entry in $our_pids; do
    i=0
    while ours "$entry" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    ours "$entry" && kill -KILL "${entry%%:*}" 2>/dev/null
  done
  our_pids=""
  rm -rf "$work"
}

from_terminal() {  # was a SIGINT typed (Ctrl-C)? Then the command, in our process group, has it already
  [ -t 0 ] && [ "$(ps -o tpgid= -p $$ | tr -d ' ')" = "$(ps -o pgid= -p $$ | tr -d ' ')" ]
}

on_signal() {  # pass the signal on to the command, wait for it, then stop our daemons
  trap '' INT TERM HUP
  trap - EXIT
  if [ -n "$cmd_pid" ]; then
    if [ "$1" != INT ] || ! from_terminal; then kill "-$1" "$cmd_pid" 2>/dev/null; fi
    wait "$cmd_pid" 2>/dev/null
  fi
  stop_ours
  exit $((128 + $2))
}
trap 'stop_ours' EXIT
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP

if ! answers; then
  if ! listening "$VIRTLOGD_SOCK"; then
    spawn virtlogd >"$work/virtlogd.log" 2>&1
  fi
  cp /etc/libvirt/qemu.conf "$work/qemu.conf"
  printf '\n# balloon-harness (ci/with-libvirtd.sh): see the comment there\nuser = "root"\ngroup = "root"\n' \
    >>"$work/qemu.conf"
  mkdir -p "$work/no-autostart"
  # setsid, setpriv, unshare and sh each exec the next: the spawned pid is libvirtd's.
  spawn unshare --mount --propagation private sh -c '
    mount --bind "$1/qemu.conf" /etc/libvirt/qemu.conf || exit 1
    for dir in /etc/libvirt/qemu/networks/autostart /etc/libvirt/qemu/autostart; do
      [ ! -d "$dir" ] || mount --bind "$1/no-autostart" "$dir" || exit 1
    done
    exec libvirtd' sh "$work" >"$work/libvirtd.log" 2>&1
  libvirtd_pid=$spawned
  # Ready when the socket answers (deadline 30 s), not after a fixed sleep.
  i=0
  until answers; do
    if ! kill -0 "$libvirtd_pid" 2>/dev/null || [ $i -ge 300 ]; then
      echo "with-libvirtd.sh: libvirtd did not come up; its log:" >&2
      cat "$work/libvirtd.log" >&2
      exit 1
    fi
    sleep 0.1
    i=$((i + 1))
  done
  # The mounts hold what they need; the daemons keep their (now unnamed) log files open.
  rm -rf "$work"
fi

# In the background so that a signal to this script reaches the trap at once; bash (unlike
# dash) lets the command take SIGINT back, so Ctrl-C still stops it.
(trap - INT QUIT; exec setpriv --pdeathsig TERM "$@") &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=""
exit $status

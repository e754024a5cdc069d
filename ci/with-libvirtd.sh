#!/bin/bash
# Run a command with a system libvirtd available (qemu:///system), for machines without
# systemd (CI). If a system libvirtd already answers, it is used and left alone. Otherwise
# this script starts its own virtlogd and libvirtd, and stops exactly those two processes
# (by pid, never by name) when the command ends, fails, or the script is interrupted.
#
# Our libvirtd runs in a private mount namespace, where two files are replaced:
# * qemu.conf runs QEMU as root (our domains ask for root anyway: <seclabel ... +0:+0>).
#   With Debian's default user libvirt-qemu and a root-only /dev/kvm (0600 root:root, as on
#   machines without udev rules), libvirt's capability cache never stays valid: its probe
#   of QEMU runs as root and finds KVM, its validity check asks whether libvirt-qemu may
#   open /dev/kvm and finds it may not, so every lookup (every connection, every domain
#   start) re-probes QEMU for ~8 s. Measured here: 7.9 s per `virsh capabilities`, then
#   0.02 s with this file.
# * the network autostart folder is empty: no default network (virbr0, dnsmasq) is
#   started, so nothing of ours outlives this script.
# Nothing outside the namespace changes. Not root, or no libvirtd installed: the command
# just runs (qemu:///session needs no daemon of ours).
set -u

if [ "$(id -u)" -ne 0 ] || ! command -v libvirtd >/dev/null 2>&1; then
  exec "$@"
fi

SYSTEM_URI=qemu:///system
work=$(mktemp -d /tmp/bh-libvirtd.XXXXXX)
our_pids=""

answers() {  # does a system libvirtd answer on its socket right now?
  timeout 10 virsh -c "$SYSTEM_URI" version >/dev/null 2>&1
}

listening() {  # is a unix socket at $1 being listened on?
  ss -xlnH 2>/dev/null | awk '{print $5}' | grep -qxF "$1"
}

stop_ours() {
  for pid in $our_pids; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $our_pids; do
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  our_pids=""
  rm -rf "$work"
}

on_signal() {  # pass the signal on to the command, wait for it, then stop our daemons
  trap - EXIT INT TERM HUP
  if [ -n "${cmd_pid:-}" ]; then
    kill "-$1" "$cmd_pid" 2>/dev/null
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
  if ! listening /run/libvirt/virtlogd-sock; then
    virtlogd >"$work/virtlogd.log" 2>&1 &
    our_pids="$our_pids $!"
  fi
  cp /etc/libvirt/qemu.conf "$work/qemu.conf"
  printf '\n# balloon-harness (ci/with-libvirtd.sh): see the comment there\nuser = "root"\ngroup = "root"\n' \
    >>"$work/qemu.conf"
  mkdir -p "$work/no-autostart"
  # unshare execs sh, which execs libvirtd: $! is libvirtd's pid.
  unshare --mount --propagation private sh -c '
    mount --bind "$1/qemu.conf" /etc/libvirt/qemu.conf &&
    { [ ! -d /etc/libvirt/qemu/networks/autostart ] ||
      mount --bind "$1/no-autostart" /etc/libvirt/qemu/networks/autostart; } &&
    exec libvirtd' sh "$work" >"$work/libvirtd.log" 2>&1 &
  libvirtd_pid=$!
  our_pids="$libvirtd_pid $our_pids"
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
fi

# In the background so that a signal to this script reaches the trap at once; bash (unlike
# dash) lets the command take SIGINT back, so Ctrl-C still stops it.
(trap - INT QUIT; exec "$@") &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=""
exit $status

#!/bin/sh
# Run a command with libvirtd available: start libvirtd and virtlogd if they are not
# running (CI machines have no systemd), and stop what this script started afterwards.
set -u
started=""
if [ "$(id -u)" -eq 0 ] && command -v libvirtd >/dev/null 2>&1; then
  if ! pgrep -x virtlogd >/dev/null; then virtlogd -d && started="$started virtlogd"; fi
  if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d && started="$started libvirtd"
    # Ready when the socket answers, not after a fixed sleep.
    i=0; until virsh -c qemu:///system version >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
  fi
fi
"$@"
status=$?
for daemon in $started; do pkill -x "$daemon" || true; done
exit $status

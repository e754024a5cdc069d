#!/bin/sh
# Runs inside the new root (mmdebstrap --customize-hook 'chroot "$1" sh /customize.sh').
set -eu
echo balloon-harness > /etc/hostname
# Root is mounted by the kernel (direct kernel boot) or by the initrd.
printf '# The kernel mounts the root disk read-write (root=/dev/vda rw); no entry, so no unit\n# waits for a udev device that the lean boot never announces.\n' > /etc/fstab
systemctl enable systemd-networkd.service bh-sshd.service bh-swap.service
systemctl disable networking.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer fstrim.timer e2scrub_all.timer 2>/dev/null || true
systemctl mask e2scrub_reap.service systemd-pstore.service keyboard-setup.service \
  modprobe@drm.service modprobe@fuse.service modprobe@loop.service modprobe@dm_mod.service \
  modprobe@efi_pstore.service modprobe@configfs.service sys-kernel-debug.mount \
  sys-kernel-tracing.mount dev-hugepages.mount dev-mqueue.mount systemd-binfmt.service \
  proc-sys-fs-binfmt_misc.automount sys-fs-fuse-connections.mount
# Generators that only look for hardware these guests never have (each runs at every boot).
mkdir -p /etc/systemd/system-generators
for g in systemd-cryptsetup-generator systemd-gpt-auto-generator systemd-hibernate-resume-generator \
         systemd-integritysetup-generator systemd-veritysetup-generator systemd-system-update-generator \
         systemd-sysv-generator systemd-rc-local-generator; do
  ln -sf /dev/null "/etc/systemd/system-generators/$g"
done
# Generators the cloud-init boot needs but the lean boot does not (the debug generator
# stays: it applies the systemd.mask= of the lean command line).
for g in cloud-init-generator systemd-fstab-generator systemd-getty-generator systemd-run-generator; do
  ln -sf /usr/local/lib/balloon-harness/generator-unless-lean "/etc/systemd/system-generators/$g"
done
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen && locale-gen >/dev/null
# No password can log in ("*"); key login works. Not "!" (passwd -l): sshd without PAM
# refuses every login to a locked account, keys included.
usermod -p '*' root
# The Intermediate daemon is installed, off until a test or scenario starts it.
systemctl disable balloon-intermediate.service 2>/dev/null || true
rm -f /customize.sh

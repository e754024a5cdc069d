"""Machines: one guest each, started directly under QEMU or through libvirt."""

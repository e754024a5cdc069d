"""The guest-side Intermediate daemon: stop distinct processes while the balloon squeezes memory.

Standard library only (it runs under Debian bookworm's python3.11 inside the guest).
See README.md in this directory.
"""

"""Code that runs inside the guest. Standard library only (Debian bookworm's python3.11)."""

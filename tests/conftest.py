"""Shared by every test of this repository."""

import signal

# A suite started in the background by a non-interactive shell (`make test &`, nohup, some CI
# agents) inherits SIGINT ignored, and an ignored signal stays ignored across exec: every child
# would then ignore Ctrl-C, and the tests that send it (the boot command, ci/with-libvirtd.sh's
# clean-up trap) would hang to their deadline. Installing a handler here makes exec reset SIGINT
# to its default in every child, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

"""Balloon policies on the host: pure decision functions from what the host can see (the
balloon's guest statistics, the budget cgroup) to new balloon targets."""

from harness.policy.base import BalloonAction, GuestStats, GuestView, HostSample, Policy, PolicyInput

__all__ = ["BalloonAction", "GuestStats", "GuestView", "HostSample", "Policy", "PolicyInput"]

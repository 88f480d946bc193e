"""Fault plans as data (the generator): which process dies, where, and how. See plan.py."""

from harness.faults.plan import KILL_EXAMPLES, KILL_GRAMMAR, SIGNALS, Fault, FaultPlan

__all__ = ["Fault", "FaultPlan", "SIGNALS", "KILL_GRAMMAR", "KILL_EXAMPLES"]

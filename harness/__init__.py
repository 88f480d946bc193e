"""resume-harness: kill distributed PyTorch training, resume it, and check it is bit-exact.

Data flow, one folder per step:
    checkpoint/  the reference checkpointer: training state -> files (atomic, checksummed, no pickle)
    launch/      start and reap the rank processes (local pool, torchrun)
    faults/      fault plans as data (FaultPlan, Fault)
    probe/       in-process probe: trace rows, fault points, final state
    oracle/      offline comparison of recorded traces -> Divergence
    report/      human and JSON output
    engine/      baseline cache + trial loop that ties the above together
    cli/, pytest_plugin.py on top
"""

__version__ = "0.1.0"

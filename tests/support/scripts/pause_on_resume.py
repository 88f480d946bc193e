"""A job that pauses right after each restart, as a machine too loaded to schedule it pauses one: no rank
records anything for --pause seconds (a stall, not a resume bug). Otherwise a correct job: a number
that evolves per step, saved every 2 steps and restored exactly. No torch.distributed (any --nproc).

--pause S   seconds to pause after a restart (default 120)
"""
import argparse
import json
import os
import time

from harness import probe

parser = argparse.ArgumentParser()
parser.add_argument("--pause", type=float, default=120.0)
parser.add_argument("--steps", type=int, default=6)
args = parser.parse_args()

rank = os.environ.get("RANK", "0")
path = os.path.join(probe.run_dir(), f"state-rank{rank}.json")
started = os.path.join(probe.run_dir(), f"started-rank{rank}")
if os.path.exists(started):  # a restart: the first row, then the pause
    probe.point("job.restarted")
    time.sleep(args.pause)
open(started, "w").close()
state = {"step": 0, "x": 1.0}
if os.path.exists(path):
    with open(path) as f:
        state = json.load(f)
    probe.point("checkpoint.loaded", step=state["step"])
while state["step"] < args.steps:
    state["step"] += 1
    state["x"] = state["x"] * 1.5 + 0.25
    probe.step(state["step"], loss=state["x"], x=state["x"])
    if state["step"] % 2 == 0:
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
        probe.point("checkpoint.committed", step=state["step"])
probe.finish(x=state["x"])

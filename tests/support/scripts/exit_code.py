"""Rank FAIL_RANK exits with FAIL_CODE after DELAY seconds (a negative code: kills itself with that signal);
the other ranks sleep for a long time, so they must be torn down by the launcher."""
import os
import sys
import time

fail_rank, code, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
with open(os.path.join(sys.argv[4], f"pid{os.environ['RANK']}"), "w") as f:
    f.write(str(os.getpid()))
if int(os.environ["RANK"]) == fail_rank:
    time.sleep(delay)
    if code < 0:
        os.kill(os.getpid(), -code)
    if code == 99:
        raise RuntimeError("boom from the test script")
    sys.exit(code)
time.sleep(600)

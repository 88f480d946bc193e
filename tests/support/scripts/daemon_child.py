"""Leaves a grandchild behind in a session of its own, then exits 0: the launcher must still reap it."""
import os
import subprocess
import sys

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
with open(os.path.join(sys.argv[1], f"daemon{os.environ['RANK']}"), "w") as f:
    f.write(str(child.pid))

"""Write what this rank sees (env, argv, sys.path[0], RNG draws, process ids) to OUT/rank{RANK}.json."""
import json
import os
import random
import sys

import numpy as np
import torch

out = sys.argv[1]
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_RUN_ID", "OMP_NUM_THREADS", "PYTHONHASHSEED", "HARNESS_LAUNCH_ID", "EXTRA_VAR"]
record = {
    "env": {k: os.environ.get(k) for k in keys},
    "argv": sys.argv,
    "path0": sys.path[0],
    "cwd": os.getcwd(),
    "name": __name__,
    "python_random": random.random(),
    "numpy_random": float(np.random.random()),
    "torch_random": float(torch.rand(1)),
    "torch_initial_seed": torch.initial_seed(),
    "hash": hash("resume-harness"),
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "threads": torch.get_num_threads(),
    "stdin_is_devnull": os.path.samestat(os.fstat(0), os.stat(os.devnull)),
}
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
    json.dump(record, f)
print("hello from rank", os.environ.get("RANK"))

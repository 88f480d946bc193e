"""Multi-node launches through torchrun's c10d rendezvous, rehearsed on one machine: two (or three)
torchrun agents against one endpoint on 127.0.0.1, run through the real ``harness`` command.

Without a launch prefix, ``--nnodes N`` starts the N agents on this machine (harness.launch.torchrun);
under SLURM the prefix (srun) starts one per node (docs/multinode.md).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from harness.cli import main
from harness.launch import LaunchError, LaunchSpec, make_launcher
from harness.launch.reap import alive
from harness.launch.torchrun import parse_endpoint

from support import SCRIPTS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def harness(*args, timeout=600, path=None):
    """The installed ``harness`` console script, as users run it (``path``: a folder put first on PATH)."""
    exe = os.path.join(os.path.dirname(sys.executable), "harness")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "harness.cli"]
    env = {**os.environ, "COLUMNS": "200"}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)


def agent_of(log_path: str) -> tuple[int, int]:
    """(node, torchrun agent pid) from the header that harness.launch.rank writes in a rank's log."""
    m = re.search(r"^harness: rank \d+ on node (\d+) \(host .*, torchrun agent pid (\d+)\)", open(log_path).read(),
                  re.M)
    assert m, f"no node header in {log_path}"
    return int(m.group(1)), int(m.group(2))


# -- fast: the command lines and the checks made before anything runs ---------------------------------
def test_several_nodes_without_a_prefix_start_their_agents_here():
    here = make_launcher("torchrun", nnodes=2, rdzv_endpoint="127.0.0.1:29400", rdzv_timeout_s=7)
    under_srun = make_launcher("torchrun", prefix=["srun", "-N2"], nnodes=2, rdzv_endpoint="node1:29400")
    assert here.local_agents == 2 and under_srun.local_agents == 1
    cmd = " ".join(here.command(LaunchSpec(nproc=4, log_dir="/l", script="t.py"), "id1"))
    assert "--nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29400 --rdzv-id id1" in cmd
    assert "--rdzv-conf join_timeout=7,read_timeout=7" in cmd  # not torchrun's 10-minute join timeout
    assert parse_endpoint("[::1]:80") == ("::1", 80)
    for bad in ("node1", "node1:", ":29400", "node1:http", "node1:0", "node1:70000"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            make_launcher("torchrun", nnodes=2, rdzv_endpoint=bad)


def test_unresolvable_endpoint_fails_at_once_naming_it(tmp_path):
    launcher = make_launcher("torchrun", nnodes=2, rdzv_endpoint="no-such-host.invalid:29400")
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match=r"no-such-host\.invalid:29400: host 'no-such-host\.invalid' does not "
                                          r"resolve"):
        launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script="t.py"))
    assert time.monotonic() - t0 < 5 and os.listdir(tmp_path) == []  # nothing was started


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_nccl_without_cuda_is_a_usage_error(capsys, tmp_path):
    assert main(["run", "default", "--backend", "nccl", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--backend nccl needs a CUDA GPU" in err and "--backend gloo" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_nccl_without_cuda_is_refused_by_every_command_that_launches_ranks():
    from harness.engine import UsageError, resolve_backend

    with pytest.raises(UsageError, match="--backend nccl needs a CUDA GPU"):
        resolve_backend("nccl")  # what run, fuzz and certify call
    assert resolve_backend("nccl", ranks_here=False) == "nccl"  # srun prefix: the ranks' machines decide


def test_replay_names_the_launcher_that_ran_the_trial():
    """A multi-node failure replays on the same launcher, nodes and endpoint (not on the default pool)."""
    from harness.engine import replay_command, resolve_target
    from harness.faults import FaultPlan

    launcher = make_launcher("torchrun", prefix=["srun", "-N", "2"], nnodes=2, rdzv_endpoint="node0:29400",
                             rdzv_timeout_s=45)
    assert launcher.remote and not make_launcher("subprocess").remote
    line = replay_command(resolve_target("default"), nproc=2, backend="gloo", seed=0, plan=FaultPlan.parse(["3"]),
                          launcher_args=launcher.replay_args())
    assert ("--launcher torchrun --launch-prefix 'srun -N 2' --nnodes 2 --rdzv-endpoint node0:29400 "
            "--rdzv-timeout 45") in line
    assert "--launcher subprocess" in replay_command(resolve_target("default"), nproc=2, backend="gloo", seed=0,
                                                     plan=FaultPlan.parse(["3"]),
                                                     launcher_args=make_launcher("subprocess").replay_args())


# -- slow: real launches --------------------------------------------------------------------------------
@pytest.mark.slow
def test_unreachable_endpoint_times_out_within_seconds_naming_it(tmp_path):
    endpoint = "192.0.2.1:29400"  # TEST-NET-1: no node of the job, nothing answers there
    t0 = time.monotonic()
    proc = harness("run", "default", "--kill", "5@1", "--launcher", "torchrun", "--nnodes", "2",
                   "--rdzv-endpoint", endpoint, "--rdzv-timeout", "3", "--no-cache", "--out", str(tmp_path / "out"),
                   "--json", timeout=300)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["verdict"] == "error"
    assert f"could not rendezvous at {endpoint} within 3 s" in out["message"]
    assert elapsed < 90  # the agents give up after 3 s each (plus python and torch start-up), not 10 minutes


@pytest.mark.slow
@pytest.mark.parametrize("nnodes, nproc, kill", [(2, 2, "7@1"), (3, 3, "9@2")])
def test_two_and_three_node_rehearsal_resumes_bit_exact(tmp_path, nnodes, nproc, kill):
    out = tmp_path / "out"
    proc = harness("run", "default", "--nproc", str(nproc), "--kill", kill, "--launcher", "torchrun",
                   "--nnodes", str(nnodes), "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-timeout", "60",
                   "--no-cache", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["verdict"] == "pass" and result["outcome"] == "bit_exact"
    assert [a["attempt"] for a in result["attempts"]] == [0, 1] and result["attempts"][1]["loaded"]
    killed = int(kill.split("@")[1])
    for attempt in (0, 1):  # every node's agent started both attempts: all nodes were restarted
        folder = out / f"attempt{attempt}"
        assert sorted(p.name for p in folder.glob("torchrun-node*.log")) == [f"torchrun-node{i}.log"
                                                                            for i in range(nnodes)]
        nodes = [agent_of(str(folder / f"rank{r}.log")) for r in range(nproc)]
        assert sorted(n for n, _ in nodes) == list(range(nnodes))
        assert len({pid for _, pid in nodes}) == nnodes  # one agent per node, each its own process
    # the fault fired on a rank of another node than rank 0's: the last node, in the first attempt
    assert agent_of(str(out / "attempt0" / f"rank{killed}.log"))[0] == nnodes - 1
    assert result["attempts"][0]["fault"]["rank"] == killed


@pytest.mark.slow
def test_two_node_rehearsal_catches_a_buggy_resume(tmp_path):
    proc = harness("run", "buggy/optimizer_not_saved", "--nproc", "2", "--kill", "7@1", "--launcher", "torchrun",
                   "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-timeout", "60",
                   "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert json.loads(proc.stdout)["verdict"] == "fail"


@pytest.mark.slow
def test_a_failed_node_gets_the_other_nodes_stopped_at_once(tmp_path):
    """Rank 1 (node 1) exits with code 4; rank 0 (node 0) would sleep for 10 minutes: its agent is stopped."""
    launcher = make_launcher("torchrun", nnodes=2, rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_timeout_s=60)
    t0 = time.monotonic()
    result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=os.path.join(SCRIPTS, "exit_code.py"),
                                        args=("1", "4", "0.5", str(tmp_path)), timeout_s=300))
    assert time.monotonic() - t0 < 90
    assert result.exits[1].returncode == 4 and not result.ok and not result.timed_out
    assert result.first_failure.rank == 1
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    assert not any(alive(p) for p in pids)
    assert agent_of(str(tmp_path / "rank0.log"))[1] != agent_of(str(tmp_path / "rank1.log"))[1]


# What srun does for the recipe of docs/multinode.md, on one machine: run the command once per node (all on
# this machine here), pass SIGTERM on, stop the others when one fails (--kill-on-bad-exit), exit non-zero if any did.
FAKE_SRUN = """#!PYTHON
import os, signal, subprocess, sys, time
args, nodes, kill_on_bad_exit = sys.argv[1:], 1, False
while args and args[0].startswith("-"):
    opt = args.pop(0)
    if opt in ("--nodes", "-N", "--ntasks-per-node", "--cpus-per-task"):
        value = args.pop(0)
        nodes = int(value) if opt in ("--nodes", "-N") else nodes
    elif opt.startswith("--kill-on-bad-exit"):
        kill_on_bad_exit = opt != "--kill-on-bad-exit=0"
procs = [subprocess.Popen(args, env={**os.environ, "SLURM_NODEID": str(i), "SLURM_PROCID": str(i)})
         for i in range(nodes)]
stop = lambda *_: [p.send_signal(signal.SIGTERM) for p in procs if p.poll() is None]
signal.signal(signal.SIGTERM, stop)
while any(p.poll() is None for p in procs):
    if kill_on_bad_exit and any(p.poll() not in (None, 0) for p in procs):
        stop()
    time.sleep(0.1)
sys.exit(max(abs(p.returncode) for p in procs))
"""


@pytest.mark.slow
def test_the_slurm_recipe_with_an_srun_that_runs_every_node_here(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.replace("PYTHON", sys.executable))
    srun.chmod(0o755)
    out = tmp_path / "out"
    proc = harness("run", "default", "--nproc", "2", "--kill", "7@1", "--launcher", "torchrun", "--nnodes", "2",
                   "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-timeout", "60",
                   "--launch-prefix", "srun --nodes 2 --ntasks-per-node 1 --cpus-per-task 1 --kill-on-bad-exit=1",
                   "--out", str(out), "--json", path=str(bin_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert json.loads(proc.stdout)["outcome"] == "bit_exact"
    for attempt in (0, 1):  # one torchrun.log (srun's output), two agents: one per node
        folder = out / f"attempt{attempt}"
        assert (folder / "torchrun.log").exists() and not list(folder.glob("torchrun-node*.log"))
        nodes = [agent_of(str(folder / f"rank{r}.log")) for r in range(2)]
        assert [n for n, _ in nodes] == [0, 1] and nodes[0][1] != nodes[1][1]

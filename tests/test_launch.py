import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.launch import LaunchSpec, make_launcher
from harness.launch.reap import alive, group_members

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")


def script(name):
    return os.path.join(SCRIPTS, name)


@pytest.fixture(scope="module")
def pool():
    launcher = make_launcher("pool")
    yield launcher
    launcher.close()


@pytest.fixture(params=["pool", "subprocess"])
def launcher(request, pool):
    if request.param == "pool":
        yield pool
    else:
        sub = make_launcher("subprocess")
        yield sub
        sub.close()


def wait_gone(pids, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def read_pids(folder, prefix):
    pids = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(prefix):
            with open(os.path.join(folder, name)) as f:
                pids += [int(p) for p in f.read().split()]
    return pids


def test_ranks_get_the_torchrun_environment(launcher, tmp_path):
    out = tmp_path / "dump"
    spec = LaunchSpec(nproc=2, log_dir=str(tmp_path / "logs"), script=script("env_dump.py"), args=(str(out), "x y"),
                      env={"EXTRA_VAR": "hello"}, cwd=str(tmp_path), attempt=3)
    result = launcher.launch(spec)
    assert result.ok, [open(e.log_path).read() for e in result.exits]
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for r, rec in enumerate(records):
        env = rec["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == env["ROLE_RANK"] == str(r)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == env["ROLE_WORLD_SIZE"] == "2"
        assert env["GROUP_RANK"] == "0" and env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) > 0
        assert env["TORCHELASTIC_USE_AGENT_STORE"] == "True" and env["TORCHELASTIC_RESTART_COUNT"] == "3"
        assert env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", "1")
        assert env["PYTHONHASHSEED"] == os.environ.get("PYTHONHASHSEED", "0")
        assert env["EXTRA_VAR"] == "hello" and env["HARNESS_LAUNCH_ID"] == result.launch_id
        assert rec["argv"] == [script("env_dump.py"), str(out), "x y"]
        assert rec["path0"] == SCRIPTS and rec["cwd"] == str(tmp_path) and rec["name"] == "__main__"
        assert rec["pgid"] == rec["pid"] and rec["stdin_is_devnull"]
        assert f"hello from rank {r}" in open(spec.log_path(r)).read()
    assert records[0]["env"]["MASTER_PORT"] == records[1]["env"]["MASTER_PORT"]
    assert records[0]["env"]["TORCHELASTIC_RUN_ID"] == records[1]["env"]["TORCHELASTIC_RUN_ID"]


def test_forked_ranks_look_like_fresh_processes(pool, tmp_path):
    """Fresh RNG states per rank and per launch (a fork must not hide nondeterminism); the same hash
    seed and thread count as a fresh interpreter."""
    sub = make_launcher("subprocess")
    draws = []
    for i, launcher in enumerate([pool, pool, sub]):
        out = tmp_path / f"dump{i}"
        assert launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / f"logs{i}"), script=script("env_dump.py"),
                                          args=(str(out),))).ok
        draws += [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for key in ("python_random", "numpy_random", "torch_random", "torch_initial_seed"):
        assert len({d[key] for d in draws}) == len(draws), key
    assert len({d["hash"] for d in draws}) == 1  # PYTHONHASHSEED=0 in the pool and in fresh processes
    assert len({d["threads"] for d in draws}) == 1


def test_init_process_group_and_logs(launcher, tmp_path):
    result = launcher.launch(LaunchSpec(nproc=3, log_dir=str(tmp_path), script=script("init_barrier.py")))
    assert result.ok and [e.rank for e in result.exits] == [0, 1, 2]
    assert result.first_failure is None and not result.timed_out
    assert sorted(os.listdir(tmp_path)) == ["rank0.log", "rank1.log", "rank2.log"]


def test_many_launches_in_a_row_reuse_nothing(pool, tmp_path):
    ports = set()
    for i in range(3):
        result = pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / str(i)), script=script("init_barrier.py")))
        assert result.ok
        ports.add(result.launch_id)
    assert len(ports) == 3


def test_a_failing_rank_tears_the_others_down(launcher, tmp_path):
    t0 = time.monotonic()
    result = launcher.launch(LaunchSpec(nproc=3, log_dir=str(tmp_path), script=script("exit_code.py"),
                                        args=("1", "3", "0.5", str(tmp_path)), timeout_s=60))
    assert time.monotonic() - t0 < 10
    by_rank = {e.rank: e for e in result.exits}
    assert by_rank[1].returncode == 3 and not by_rank[1].torn_down
    assert by_rank[0].returncode == -signal.SIGKILL and by_rank[0].torn_down and by_rank[2].torn_down
    assert result.first_failure.rank == 1 and not result.ok and not result.timed_out
    assert "rank 1 exited with code 3" == by_rank[1].describe()
    assert wait_gone(read_pids(tmp_path, "pid"))


@pytest.mark.parametrize("code, expected", [(99, 1), (-int(signal.SIGTERM), -int(signal.SIGTERM)), (0, 0)])
def test_exit_statuses(pool, tmp_path, code, expected):
    result = pool.launch(LaunchSpec(nproc=1, log_dir=str(tmp_path), script=script("exit_code.py"),
                                    args=("0", str(code), "0", str(tmp_path))))
    assert result.exits[0].returncode == expected
    if code == 99:
        log = open(result.exits[0].log_path).read()
        assert "Traceback" in log and "RuntimeError: boom from the test script" in log


def test_timeout_kills_everything(launcher, tmp_path):
    t0 = time.monotonic()
    result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"),
                                        args=(str(tmp_path),), timeout_s=3))
    assert 3 <= time.monotonic() - t0 < 10
    assert result.timed_out and not result.ok
    assert all(e.torn_down and e.returncode == -signal.SIGKILL for e in result.exits)
    pids = read_pids(tmp_path, "pids")
    assert len(pids) == 4 and wait_gone(pids)  # the ranks and their children


def test_descendants_that_left_the_group_are_reaped(launcher, tmp_path):
    result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("daemon_child.py"),
                                        args=(str(tmp_path),)))
    assert result.ok
    pids = read_pids(tmp_path, "daemon")
    assert len(pids) == 2 and wait_gone(pids)


def test_hash_seed_random_falls_back_to_fresh_processes(pool, tmp_path):
    hashes = set()
    for i in range(2):
        out = tmp_path / str(i)
        result = pool.launch(LaunchSpec(nproc=2, log_dir=str(out / "logs"), script=script("env_dump.py"),
                                        args=(str(out),), env={"PYTHONHASHSEED": "random"}))
        assert result.ok
        hashes |= {json.loads((out / f"rank{r}.json").read_text())["hash"] for r in range(2)}
    assert len(hashes) == 4


def test_module_target(pool, tmp_path):
    result = pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), module="json.tool", args=("--help",)))
    assert result.ok
    assert "usage:" in open(result.exits[0].log_path).read()


def test_spec_validation():
    with pytest.raises(ValueError, match="exactly one"):
        LaunchSpec(nproc=1, log_dir=".")
    with pytest.raises(ValueError, match="nproc"):
        LaunchSpec(nproc=0, log_dir=".", script="x.py")
    with pytest.raises(ValueError, match="unknown launcher"):
        make_launcher("mpi")


# -- Ctrl-C and a dead harness --------------------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import sys
    from harness.launch import LaunchSpec, make_launcher
    launcher = make_launcher(sys.argv[1])
    print("zygote", getattr(launcher, "_zygotes", None) and list(launcher._zygotes.values())[0].proc.pid, flush=True)
    try:
        launcher.launch(LaunchSpec(nproc=2, log_dir=sys.argv[2], script=sys.argv[3], args=(sys.argv[2],), timeout_s=120))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
""")


def start_driver(tmp_path, kind):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), kind, str(tmp_path), script("hang.py")],
                            stdout=subprocess.PIPE, text=True)
    zygote = proc.stdout.readline().split()[1]
    deadline = time.monotonic() + 60
    while len(read_pids(tmp_path, "pids")) < 4:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return proc, (int(zygote) if zygote != "None" else None)


@pytest.mark.parametrize("kind", ["pool", "subprocess"])
def test_ctrl_c_leaves_nothing_running(tmp_path, kind):
    proc, zygote = start_driver(tmp_path, kind)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out and proc.returncode != 0
    pids = read_pids(tmp_path, "pids") + ([zygote] if zygote else [])
    assert wait_gone(pids)
    for pid in read_pids(tmp_path, "pids")[::2]:
        assert group_members(pid) == []


@pytest.mark.parametrize("kind", ["pool", pytest.param("torchrun", marks=pytest.mark.slow)])
def test_killed_harness_leaves_nothing_running(tmp_path, kind):
    proc, zygote = start_driver(tmp_path, kind)
    proc.kill()
    proc.wait()
    if kind == "pool":
        assert wait_gone(read_pids(tmp_path, "pids") + [zygote])
    else:  # torchrun gets SIGTERM (its parent-death signal) and stops its workers itself
        assert wait_gone(read_pids(tmp_path, "pids"), within=15)


# -- torchrun ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_launcher(tmp_path):
    launcher = make_launcher("torchrun")
    ok = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "ok"), script=script("init_barrier.py"),
                                    timeout_s=120))
    assert ok.ok and [e.returncode for e in ok.exits] == [0, 0]
    out = tmp_path / "dump"
    launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "env"), script=script("env_dump.py"), args=(str(out),),
                               env={"EXTRA_VAR": "v"}, timeout_s=120))
    rec = json.loads((out / "rank1.json").read_text())
    assert rec["env"]["RANK"] == "1" and rec["env"]["EXTRA_VAR"] == "v" and rec["path0"] == SCRIPTS
    assert "hello from rank 1" in open(tmp_path / "env" / "rank1.log").read()
    t0 = time.monotonic()
    bad = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "bad"), script=script("exit_code.py"),
                                     args=("1", "4", "0.5", str(tmp_path / "bad")), timeout_s=120))
    assert time.monotonic() - t0 < 60
    assert bad.exits[1].returncode == 4 and not bad.ok
    assert wait_gone(read_pids(tmp_path / "bad", "pid"))


def test_torchrun_command_line():
    launcher = make_launcher("torchrun", prefix=["srun", "-N2"], nnodes=2, rdzv_endpoint="node1:29400")
    cmd = launcher.command(LaunchSpec(nproc=4, log_dir="/shared/logs", script="train.py", args=("--x",)), "abc")
    assert cmd[:2] == ["srun", "-N2"]
    joined = " ".join(cmd)
    assert "--nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint node1:29400 --rdzv-id abc" in joined
    assert joined.endswith("-m harness.launch.rank /shared/logs train.py --x")
    with pytest.raises(ValueError, match="multiple"):
        launcher.command(LaunchSpec(nproc=3, log_dir=".", script="t.py"), "abc")
    with pytest.raises(ValueError, match="rendezvous endpoint"):
        make_launcher("torchrun", nnodes=2)
    with pytest.raises(ValueError, match="nnodes"):
        make_launcher("torchrun", nnodes=0)

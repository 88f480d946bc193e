import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.launch import LaunchSpec, make_launcher
from harness.launch.reap import group_members

from support import SCRIPTS  # noqa: E402
from support.processes import sigint_delivered, wait_gone


def script(name):
    return os.path.join(SCRIPTS, name)


# The subprocess launcher pays a fresh interpreter and torch import per rank: its variants of these
# tests run with the slow set (CI runs both); the console-script tests cover it in the fast set.
@pytest.fixture(params=["pool", pytest.param("subprocess", marks=pytest.mark.slow)])
def launcher(request, pool):
    if request.param == "pool":
        yield pool
    else:
        sub = make_launcher("subprocess")
        yield sub
        sub.close()


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


@pytest.mark.slow
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
                            stdout=subprocess.PIPE, text=True, preexec_fn=sigint_delivered)
    zygote = proc.stdout.readline().split()[1]
    deadline = time.monotonic() + 60
    while len(read_pids(tmp_path, "pids")) < 4:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return proc, (int(zygote) if zygote != "None" else None)


@pytest.mark.parametrize("kind", ["pool", pytest.param("subprocess", marks=pytest.mark.slow)])
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


# -- watch: stalls caught in seconds ---------------------------------------------------------------------
def stall_after(seconds, calls):
    def watch(elapsed):
        calls.append(elapsed)
        return "stalled" if elapsed >= seconds else None
    return watch


def test_watch_stops_a_hang(launcher, tmp_path):
    calls = []
    t0 = time.monotonic()
    result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"),
                                        args=(str(tmp_path),), timeout_s=60, watch=stall_after(1.0, calls)))
    assert time.monotonic() - t0 < 10  # well before timeout_s
    assert result.stopped == "stalled" and not result.timed_out and not result.ok
    assert all(e.torn_down and e.returncode == -signal.SIGKILL for e in result.exits)
    assert calls[-1] >= 1.0 and calls == sorted(calls) and len(calls) <= 4  # about twice a second
    pids = read_pids(tmp_path, "pids")
    assert len(pids) == 4 and wait_gone(pids)


def test_watch_that_never_stops_leaves_the_launch_alone(launcher, tmp_path):
    calls = []
    result = launcher.launch(LaunchSpec(nproc=1, log_dir=str(tmp_path), script=script("exit_code.py"),
                                        args=("0", "0", "1.2", str(tmp_path)), timeout_s=60,
                                        watch=lambda elapsed: calls.append(elapsed)))
    assert result.ok and result.stopped is None and not result.exits[0].torn_down
    assert 1 <= len(calls) <= 4 and calls == sorted(calls)


@pytest.mark.parametrize("kind", ["pool", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_watch_that_raises_leaves_nothing_running(pool, tmp_path, kind):
    launcher = pool if kind == "pool" else make_launcher("subprocess")

    def watch(elapsed):
        if len(read_pids(tmp_path, "pids")) == 4:
            raise RuntimeError("watch failed")

    with pytest.raises(RuntimeError, match="watch failed"):
        launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"), args=(str(tmp_path),),
                                   timeout_s=60, watch=watch))
    assert wait_gone(read_pids(tmp_path, "pids"))
    again = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "again"), script=script("init_barrier.py")))
    assert again.ok  # the launcher (and the pool's zygote) still serves


@pytest.mark.slow
def test_torchrun_watch_stops_a_hang(tmp_path):
    calls = []
    t0 = time.monotonic()
    result = make_launcher("torchrun").launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"),
                                                         args=(str(tmp_path),), timeout_s=120,
                                                         watch=lambda e: calls.append(e) or (
                                                             "stalled" if len(read_pids(tmp_path, "pids")) == 4
                                                             else None)))
    assert time.monotonic() - t0 < 60
    assert result.stopped == "stalled" and not result.timed_out and not result.ok
    assert all(e.torn_down for e in result.exits)
    assert wait_gone(read_pids(tmp_path, "pids"), within=15)


@pytest.mark.slow
def test_close_from_another_thread_during_a_launch(tmp_path):
    import threading

    launcher = make_launcher("pool")
    zygote = list(launcher._zygotes.values())[0].proc.pid
    outcome = {}

    def run():
        try:
            outcome["result"] = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"),
                                                           args=(str(tmp_path),), timeout_s=120))
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while len(read_pids(tmp_path, "pids")) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    launcher.close()
    thread.join(30)
    assert not thread.is_alive()
    assert "error" in outcome or not outcome["result"].ok
    assert wait_gone(read_pids(tmp_path, "pids") + [zygote])
    with pytest.raises(Exception, match="closed"):
        launcher.launch(LaunchSpec(nproc=1, log_dir=str(tmp_path / "x"), script=script("init_barrier.py")))


# -- the rendezvous store listens on loopback only and shrugs off junk ----------------------------------------
def non_loopback_ipv4() -> str | None:
    import ipaddress
    import socket

    candidates = set()
    try:
        candidates |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
        candidates |= {line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line}
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    for addr in sorted(candidates):
        if not ipaddress.ip_address(addr).is_loopback:
            return addr
    return None


def rank_store_address(pid: int) -> tuple[str, int]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(entry.split(b"=", 1) for entry in f.read().split(b"\0") if b"=" in entry)
    return env[b"MASTER_ADDR"].decode(), int(env[b"MASTER_PORT"])


def test_store_listens_on_loopback_only(launcher, tmp_path):
    import socket

    outside = non_loopback_ipv4()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    seen = {}

    def watch(elapsed):
        pids = read_pids(tmp_path, "pids")
        if len(pids) < 4:
            return None
        addr, port = rank_store_address(pids[1])  # rank 0's child: exec'd with the rank's environment
        seen.update(addr=addr, port=port)
        with socket.create_connection((addr, port), timeout=5):
            seen["inside"] = True  # the store is up, where MASTER_ADDR says
        try:
            with socket.create_connection((outside, port), timeout=5):
                seen["outside"] = "reachable"
        except OSError as e:
            seen["outside"] = type(e).__name__
        return "checked"

    result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path), script=script("hang.py"),
                                        args=(str(tmp_path),), timeout_s=60, watch=watch))
    assert result.stopped == "checked", seen
    assert seen["addr"] == "127.0.0.1" and seen["inside"]
    assert seen["outside"] == "ConnectionRefusedError", (outside, seen)
    assert wait_gone(read_pids(tmp_path, "pids"))


JUNK_TARGET = textwrap.dedent("""
    import os, sys, time
    import torch
    import torch.distributed as dist

    out, rank = sys.argv[1], os.environ["RANK"]

    def phase(name):
        with open(os.path.join(out, f"{name}{rank}"), "w") as f:
            f.write(os.environ["MASTER_PORT"])
        while not os.path.exists(os.path.join(out, f"go-{name}")):
            time.sleep(0.05)

    phase("before")  # junk arrives before the ranks join the store ...
    dist.init_process_group("gloo")
    phase("after")  # ... and while they use it
    dist.barrier()
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == dist.get_world_size()
    dist.destroy_process_group()
""")


def test_junk_sent_to_the_store_does_not_hurt_the_run(launcher, tmp_path):
    import random
    import socket

    target = tmp_path / "junk_target.py"
    target.write_text(JUNK_TARGET)
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(1234)
    held = []  # junk connections, left open for the rest of the run

    def send_junk(port):
        for payload in (rng.randbytes(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", rng.randbytes(4096),
                        b"\xff" * 4096):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(conn)
            try:
                conn.sendall(payload)
            except OSError:
                pass  # the store may drop a junk connection: fine

    def watch(elapsed):
        for phase in ("before", "after"):
            if (out / f"go-{phase}").exists():
                continue
            if all((out / f"{phase}{r}").exists() for r in range(2)):
                send_junk(int((out / f"{phase}0").read_text()))
                (out / f"go-{phase}").touch()
            return None

    try:
        result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "logs"), script=str(target),
                                            args=(str(out),), timeout_s=60, watch=watch))
    finally:
        for conn in held:
            conn.close()
    assert (out / "go-after").exists() and len(held) == 8
    assert result.ok and [e.returncode for e in result.exits] == [0, 0], \
        [open(e.log_path).read()[-2000:] for e in result.exits]

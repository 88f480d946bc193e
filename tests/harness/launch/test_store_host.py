"""The pool launcher's kept store host: a fresh rendezvous store per launch, and nothing left behind."""

import os
import signal
import textwrap

import pytest

from harness.launch import LaunchSpec
from harness.launch.forkserver import ForkServerLauncher
from harness.launch.spec import base_env, startup_env
from support.processes import wait_gone

# Rank 0 reports whether a key that an earlier launch set is in this launch's store, then sets it.
STALE_KEY = textwrap.dedent("""
    import os, sys
    import torch.distributed as dist

    dist.init_process_group("gloo")
    store = dist.distributed_c10d._get_default_store()
    if dist.get_rank() == 0:
        seen = store.check(["left-by-an-earlier-launch"])
        store.set("left-by-an-earlier-launch", "1")
        with open(os.path.join(sys.argv[1], f"seen-{os.environ['MASTER_PORT']}"), "w") as f:
            f.write(str(int(seen)))
    dist.barrier()
    dist.destroy_process_group()
""")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def zygote_pid(launcher):
    """The pid of the zygote that serves launches with this process's environment."""
    zygote = launcher._zygotes[startup_env(base_env())]
    return zygote.wait_ready()["pid"]


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "stale_key.py"
    path.write_text(STALE_KEY)
    return str(path)


def test_each_launch_gets_a_fresh_store_from_one_kept_host_that_dies_with_the_zygote(tmp_path, target):
    launcher = ForkServerLauncher()  # its own: its zygote is killed below
    try:
        hosts = []
        for i in range(3):
            result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / f"l{i}"), script=target,
                                                args=(str(tmp_path),), timeout_s=60))
            assert result.ok, [e.describe() for e in result.exits]
            hosts.append(children(zygote_pid(launcher)))
        assert len(hosts[0]) == 1 and hosts[0] == hosts[1] == hosts[2]  # the store host, and only it, is kept
        seen = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("seen-"))
        assert len(seen) == 3  # three stores, three ports
        assert all((tmp_path / name).read_text() == "0" for name in seen)  # no key of an earlier launch
        os.kill(zygote_pid(launcher), signal.SIGKILL)  # a zygote killed outright: its store host goes too
        assert wait_gone(hosts[0], within=10)
    finally:
        launcher.close()


@pytest.mark.slow  # the old way, kept for benchmarks only
def test_per_launch_stores_leave_no_process_between_launches(tmp_path, target):
    launcher = ForkServerLauncher(store="per-launch")
    try:
        result = launcher.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "l"), script=target,
                                            args=(str(tmp_path),), timeout_s=60))
        assert result.ok
        assert children(zygote_pid(launcher)) == []
    finally:
        launcher.close()


def test_an_unknown_store_kind_is_refused():
    with pytest.raises(ValueError, match="store must be one of kept, per-launch"):
        ForkServerLauncher(store="shared")


def test_a_dead_store_host_is_replaced(pool, tmp_path, target):
    assert pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "a"), script=target, args=(str(tmp_path),),
                                  timeout_s=60)).ok
    (host,) = children(zygote_pid(pool))
    os.kill(host, signal.SIGKILL)
    assert wait_gone([host], within=10)
    result = pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "b"), script=target, args=(str(tmp_path),),
                                    timeout_s=60))
    assert result.ok, [e.describe() for e in result.exits]
    (new_host,) = children(zygote_pid(pool))
    assert new_host != host


def test_an_address_the_store_cannot_listen_on_fails_the_launch_naming_it(pool, tmp_path, target):
    from harness.launch import LaunchError

    with pytest.raises(LaunchError, match="cannot listen on 192.0.2.1"):  # TEST-NET-1: no interface has it
        pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "a"), script=target, args=(str(tmp_path),),
                               timeout_s=60, master_addr="192.0.2.1"))
    assert pool.launch(LaunchSpec(nproc=2, log_dir=str(tmp_path / "b"), script=target, args=(str(tmp_path),),
                                  timeout_s=60)).ok  # the store host still serves

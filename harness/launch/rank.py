"""Code that runs inside a rank process: run the script as ``python script.py`` would, then exit.

Used by the fork server (after the fork) and, as ``python -m harness.launch.rank``, as the
torchrun entry point that sends each rank's output to its own log file.
"""

from __future__ import annotations

import os
import sys

from harness import private_apis, run_env

private_apis.require("python")  # atexit._run_exitfuncs and others that run_and_exit uses to end a rank


def redirect_stdio(log_path: str) -> None:
    """stdin from /dev/null; stdout and stderr appended to ``log_path``."""
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)


#: Auto mode's in-process installer (``install()`` before the script, ``finish()`` after it returned),
#: used when ``HARNESS_AUTO=1``. Named rather than imported: launch/ sits below probe/ in the import
#: order (tests/harness/test_imports.py), and this code runs only inside a rank process.
AUTO_INSTALLER = "harness.probe.auto"
#: The diagnosis evidence (backward calls, fetched batches, hyperparameters per step), in every mode.
EVIDENCE_INSTALLER = "harness.probe.evidence"


def auto_mode() -> bool:
    return os.environ.get(run_env.AUTO) == "1"


def _auto():
    import importlib

    return importlib.import_module(AUTO_INSTALLER)


def run_target(script: str | None, module: str | None, args: list[str]) -> None:
    """Run ``script`` (or ``module``) as ``__main__`` with sys.argv and sys.path[0] set as python does.

    Every launcher runs ranks through here (the fork server after the fork, torchrun and the subprocess
    launcher in auto mode or with a GPU through ``python -m harness.launch.rank``), so this is the one place
    where auto mode's hooks and the GPU determinism settings (``harness.launch.determinism``) are installed,
    before the script's first line.
    """
    import runpy

    from harness.launch import determinism

    if determinism.wanted():  # NCCL or a visible GPU: deterministic kernels before the script's first line
        determinism.apply()
    if os.environ.get(run_env.TRACE_DIR):
        import importlib

        importlib.import_module(EVIDENCE_INSTALLER).install()
    if auto_mode():
        _auto().install()

    if script is not None:
        script = os.path.abspath(script)
        sys.argv = [script, *args]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")
    else:
        sys.argv = [module, *args]  # runpy.run_module(alter_sys=True) puts the module's file in argv[0]
        sys.path[0] = os.getcwd()
        runpy.run_module(module, run_name="__main__", alter_sys=True)


def exit_code_of(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _skip_torch_library_finalizers() -> None:
    """torch deregisters its operator libraries at exit, which takes time; a process about to _exit need not."""
    import weakref

    for info in list(getattr(weakref.finalize, "_registry", {}).values()):
        if getattr(info.func, "__module__", "") == "torch.library" and info.func.__name__ == "_del_library":
            info.atexit = False


def finish_interpreter(code: int = 0) -> int:
    """What the interpreter's exit does that matters, while it is still whole: join the non-daemon threads,
    run the atexit handlers, flush stdout and stderr. Returns ``code``, or 1 if a handler raised.

    The caller then ends with ``os._exit``, skipping Py_Finalize, which can abort a process whose work
    succeeded: a torch C++ thread (a gloo worker) that still needs the GIL while the interpreter is torn
    down is ended by CPython, and the forced unwind ends in std::terminate ("terminate called without an
    active exception"; pytorch/pytorch#179291 describes it). The test helpers' spawned ranks hit it.
    """
    import atexit
    import threading

    try:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        _skip_torch_library_finalizers()
        atexit._run_exitfuncs()
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return code


def exit_after(target, *args) -> None:
    """``target(*args)`` in this process, then the interpreter's exit without Py_Finalize: never returns.

    For a rank process started by ``multiprocessing``'s spawn (tests, benches): exit 0 after a normal
    return, 1 after an exception (its traceback printed), the code of a ``SystemExit``.
    """
    code = 0
    try:
        target(*args)
    except SystemExit as e:
        code = exit_code_of(e)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    os._exit(finish_interpreter(code))


def run_and_exit(script: str | None, module: str | None, args: list[str], exit_file: str | None = None) -> None:
    """Run the target in this (forked) process and end it as the interpreter would: never returns.

    Like Py_Finalize: join non-daemon threads, run atexit handlers, flush stdio; an uncaught
    exception prints its traceback and exits 1; an uncaught KeyboardInterrupt ends by SIGINT.
    With ``exit_file``, the exit status is also written there as JSON (the torchrun path).
    """
    import signal

    code, interrupted = 0, False
    try:
        run_target(script, module, args)
        if auto_mode():
            _auto().finish()  # only after a normal return: the final state of auto mode
    except SystemExit as e:
        code = exit_code_of(e)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    code = finish_interpreter(code)
    if exit_file is not None:
        import json
        import time

        with open(exit_file, "w") as f:
            json.dump({"returncode": -signal.SIGINT if interrupted else code, "pid": os.getpid(),
                       "time": time.time()}, f)
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.launch.rank (LOG_DIR | --inherit-stdio) (SCRIPT | -m MODULE) [ARGS...]``.

    The torchrun entry (output to LOG_DIR/rank{RANK}.log, exit status to rank{RANK}.exit); with
    ``--inherit-stdio`` the subprocess launcher's entry in auto mode (its output is already the log).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        sys.exit("usage: python -m harness.launch.rank (LOG_DIR | --inherit-stdio) (SCRIPT | -m MODULE) [ARGS...]")
    log_dir, argv = argv[0], argv[1:]
    rank = os.environ.get("RANK", "0")
    exit_file = None
    if log_dir != "--inherit-stdio":
        redirect_stdio(os.path.join(log_dir, f"rank{rank}.log"))
        exit_file = os.path.join(log_dir, f"rank{rank}.exit")
        # Which node (torchrun's group rank), host and agent ran this rank: multi-node logs are read in one folder.
        import socket

        print(f"harness: rank {rank} on node {os.environ.get('GROUP_RANK', '?')} (host {socket.gethostname()}, "
              f"torchrun agent pid {os.getppid()})", flush=True)
    if argv[0] == "-m":
        run_and_exit(None, argv[1], argv[2:], exit_file)
    else:
        run_and_exit(argv[0], None, argv[1:], exit_file)


if __name__ == "__main__":
    main()

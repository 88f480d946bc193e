"""pytest plugin of resume-harness (loaded in every pytest session through the pytest11 entry point).

The fixture::

    def test_my_training_resumes(resume_harness):
        result = resume_harness("train.py", plan="12")   # -> HarnessResult (a harness.oracle.RunResult)
        result.assert_pass()                             # AssertionError carrying the full report

The marker (the trials run before the test body; a trial whose outcome is not ``expect`` fails the
test with its report)::

    @pytest.mark.resume("train.py", plan="12@all", nproc=2)
    def test_resumes_exactly():
        pass

    @pytest.mark.resume("buggy.py", plan="7", expect="divergence")
    def test_the_bug_is_caught(resume_result):
        assert resume_result.first_divergence.step == 5

Options (the defaults of both; a test's own arguments win): ``--harness-nproc`` (2),
``--harness-backend`` (auto), ``--harness-seed`` (0), ``--harness-trials`` (1: a marked test whose
plan is random runs N trials, with seeds S, S+1, ..., S+N-1 from --harness-seed; a fixed plan runs once),
``--harness-auto`` (auto mode for every trial, as ``harness run --auto``).

A script is taken as ``harness run`` takes it (``harness.engine.run`` with ``auto=None``): one with no
probe calls is tested as it is, in auto mode, its own save calls being fault points (``torch.save:2``).

Inside a Hypothesis test (``@given(plan=fault_plans(...))``), the fixture runs each plan once per test:
when Hypothesis calls the test again with a plan already run (to replay a failure before reporting
it, or a plan drawn twice), it gets the same result. A trial's outcome can hinge on timing (a rank
race: which rank's save finished before the kill); run again, the plan could pass or be rejected by
``assume``, and Hypothesis would then end the test with ``FlakyFailure`` instead of the failure's report.

Every trial writes under the test's ``tmp_path`` and uses one warm fork-server launcher per pytest
process (so per xdist worker), closed at the end of the session; rendezvous ports are picked by the
OS, so tests run in parallel under ``pytest -n auto``. Importing this module imports nothing beyond
pytest.
"""

from __future__ import annotations

import functools
import itertools

import pytest

DEFAULTS = {"nproc": 2, "backend": "auto", "seed": 0, "trials": 1}
MARKER = "resume"
#: Marker arguments that are the plugin's own (everything else goes to harness.engine.run).
MARKER_OWN = ("target", "trials", "expect")
BACKEND_CHOICES = ("auto", "gloo", "nccl")


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def pytest_addoption(parser):
    group = parser.getgroup("resume-harness", "resume-harness (kill/resume trials)")
    group.addoption("--harness-nproc", type=_positive_int, default=None, metavar="N",
                    help="ranks of each trial of the resume_harness fixture and @pytest.mark.resume (default 2)")
    group.addoption("--harness-backend", choices=BACKEND_CHOICES, default=None,
                    help="process group backend of each trial (default auto: nccl with CUDA, else gloo)")
    group.addoption("--harness-seed", type=int, default=None, metavar="S",
                    help="seed of random faults (default 0); trial i of a marked test uses S+i")
    group.addoption("--harness-trials", type=_positive_int, default=None, metavar="N",
                    help="trials of each @pytest.mark.resume test whose plan is random (default 1)")
    group.addoption("--harness-auto", action="store_true", default=None,
                    help="record every trial with auto mode (as harness run --auto); by default a script with no "
                         "probe calls goes to auto mode by itself")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "resume(target, plan=None, nproc=..., seed=..., trials=..., expect='bit_exact', **run_kwargs): run "
        "resume-harness trial(s) of target before the test and fail it, with the report, when a trial's outcome "
        "is not expect (expect=None: no check); the test may take resume_result / resume_results")


def _defaults(config) -> dict:
    opts = {"nproc": config.getoption("harness_nproc"), "backend": config.getoption("harness_backend"),
            "seed": config.getoption("harness_seed"), "trials": config.getoption("harness_trials")}
    out = {k: DEFAULTS[k] if v is None else v for k, v in opts.items()}
    if config.getoption("harness_auto", default=None):
        out["auto"] = True  # else run's own rule (auto=None): auto mode for a script with no probe calls
    return out


# ----------------------------------------------------------------------------------------------- result


@functools.lru_cache(maxsize=None)
def result_class():
    """``HarnessResult``: a ``harness.oracle.RunResult`` with ``report()`` and ``assert_pass()`` (made on first use,
    so that importing the plugin imports nothing of the harness)."""
    from dataclasses import dataclass

    from harness.oracle import RunResult

    @dataclass(frozen=True)
    class HarnessResult(RunResult):
        """A RunResult (every attribute of it) with the two helpers a test needs."""

        @classmethod
        def of(cls, result) -> HarnessResult:
            if isinstance(result, cls):
                return result
            from dataclasses import fields

            return cls(**{f.name: getattr(result, f.name) for f in fields(result)})

        def report(self, width: int = 200) -> str:
            return render_report(self, width)

        def assert_pass(self) -> None:
            """Raise AssertionError with the full report unless the verdict is pass."""
            from harness.oracle import VerdictKind

            if self.verdict != VerdictKind.PASS:
                raise AssertionError(f"resume-harness trial did not pass: {self.outcome}\n{self.report()}")

        def assert_outcome(self, outcome: str) -> None:
            """Raise AssertionError with the full report unless the outcome is ``outcome``."""
            if str(self.outcome) != str(outcome):
                raise AssertionError(f"resume-harness trial: outcome {self.outcome}, expected {outcome}\n"
                                     f"{self.report()}")

    HarnessResult.__qualname__ = HarnessResult.__name__
    HarnessResult.__module__ = __name__
    return HarnessResult


def __getattr__(name: str):
    """``harness.pytest_plugin.HarnessResult``, made on first access."""
    if name == "HarnessResult":
        return result_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def render_report(result, width: int = 200) -> str:
    """The text report of a result (the one ``harness run`` prints), as a string without colours.

    It holds the verdict, the first divergence and its tensor table, the hint, the diagnosis (likely
    cause and evidence) where the result has one, and the replay command.
    """
    from io import StringIO

    from rich.console import Console

    from harness.report import render_text

    buf = StringIO()
    render_text(result, Console(file=buf, width=width, color_system=None, force_terminal=False))
    text = buf.getvalue()
    diagnosis = getattr(result, "diagnosis", None)
    summary = getattr(diagnosis, "summary", None)
    if diagnosis is not None and summary and summary not in text:  # a renderer that does not show it yet
        text += f"likely cause: {getattr(diagnosis, 'cause', '?')} - {summary}\n"
        evidence = getattr(diagnosis, "evidence", None)
        if evidence:
            text += f"  evidence: {evidence}\n"
    return text


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def resume_harness_launcher():
    """The fork-server launcher shared by every trial of this pytest process."""
    from harness.launch.factory import borrowed

    with borrowed() as launcher:  # a pool of our own, closed at the end of the session
        yield launcher


def _in_hypothesis_test() -> bool:
    import sys

    hypothesis = sys.modules.get("hypothesis")  # not imported: not inside a Hypothesis test
    return hypothesis is not None and hypothesis.currently_in_test_context()


def _plan_key(target, kwargs: dict):
    """What defines a trial, for running each plan once per Hypothesis test (None: not hashable, no memo)."""
    from harness.faults import FaultPlan

    try:
        plan = FaultPlan.coerce(kwargs.get("plan")).format() if kwargs.get("plan") is not None else None
        key = (str(target), plan, tuple(sorted((k, repr(v)) for k, v in kwargs.items()
                                               if k not in ("plan", "out_dir", "launcher", "progress"))))
        hash(key)
        return key
    except (TypeError, ValueError):
        return None


def _runner(request, launcher, tmp_path):
    import harness.engine

    defaults = _defaults(request.config)
    counter = itertools.count()
    seen: dict = {}  # plan key -> result, inside a Hypothesis test: one outcome per plan (see the module docstring)

    def run_trial(target, **kwargs):
        key = _plan_key(target, kwargs) if _in_hypothesis_test() else None
        if key is not None and key in seen:
            return seen[key]
        kwargs.setdefault("out_dir", str(tmp_path / f"trial{next(counter)}"))
        kwargs.setdefault("launcher", launcher)
        for key_ in ("nproc", "backend", "seed", "auto"):
            if key_ in defaults:
                kwargs.setdefault(key_, defaults[key_])
        result = result_class().of(harness.engine.run(target, **kwargs))
        if key is not None:
            seen[key] = result
        return result

    return run_trial


@pytest.fixture
def resume_harness(request, resume_harness_launcher, tmp_path):
    """A callable ``run(target, **kwargs) -> HarnessResult`` (the arguments of ``harness.engine.run``).

    nproc, backend and seed default to --harness-nproc / --harness-backend / --harness-seed; the
    output folder to a fresh folder under ``tmp_path``; the launcher to the session's warm one.
    """
    return _runner(request, resume_harness_launcher, tmp_path)


def marker_trials(marker, defaults: dict) -> tuple[str, list[dict], str | None]:
    """(target, run kwargs of each trial, expected outcome) of a ``resume`` marker."""
    kwargs = dict(marker.kwargs)
    if marker.args:
        if len(marker.args) > 1 or "target" in kwargs:
            raise pytest.UsageError(f"@pytest.mark.resume takes one positional argument (the target), "
                                    f"got {marker.args!r} and kwargs {sorted(kwargs)}")
        kwargs["target"] = marker.args[0]
    if "target" not in kwargs:
        raise pytest.UsageError("@pytest.mark.resume needs a target: @pytest.mark.resume('train.py', plan='12')")
    target = kwargs.pop("target")
    expect = kwargs.pop("expect", "bit_exact")
    trials = kwargs.pop("trials", defaults["trials"])
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise pytest.UsageError(f"@pytest.mark.resume(trials=...) must be an integer >= 1, got {trials!r}")
    for key in ("nproc", "backend", "auto"):
        if key in defaults:
            kwargs.setdefault(key, defaults[key])
    seed = kwargs.pop("seed", defaults["seed"])
    from harness.faults import FaultPlan

    try:
        random_plan = kwargs.get("plan") is None or FaultPlan.coerce(kwargs["plan"]).has_random
    except ValueError as e:
        raise pytest.UsageError(f"@pytest.mark.resume(plan={kwargs.get('plan')!r}): {e}") from None
    n = trials if random_plan else 1
    return target, [{**kwargs, "seed": seed + i} for i in range(n)], expect


@pytest.fixture
def resume_results(request, resume_harness_launcher, tmp_path):
    """Every trial of the test's ``@pytest.mark.resume`` marker, in order (a tuple of HarnessResult)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        raise pytest.UsageError(f"{request.node.nodeid}: resume_result / resume_results need "
                                f"@pytest.mark.resume(target, ...); without it use the resume_harness fixture")
    target, trials, _ = marker_trials(marker, _defaults(request.config))
    run_trial = _runner(request, resume_harness_launcher, tmp_path)
    return tuple(run_trial(target, **kwargs) for kwargs in trials)


@pytest.fixture
def resume_result(resume_results):
    """The trial of the test's marker that did not pass (the first such), else the last trial."""
    from harness.oracle import VerdictKind

    return next((r for r in resume_results if r.verdict != VerdictKind.PASS), resume_results[-1])


# ----------------------------------------------------------------------------------------------- hooks


def pytest_collection_modifyitems(session, config, items):
    """A marked test runs its trials as a fixture (resume_results), even when it does not ask for them."""
    for item in items:
        if item.get_closest_marker(MARKER) is not None and "resume_results" not in getattr(item, "fixturenames", ()):
            item.fixturenames.append("resume_results")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Before the body of a marked test: fail it, with the report, if a trial's outcome is not ``expect``."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return
    expect = marker.kwargs.get("expect", "bit_exact")
    results = getattr(item, "funcargs", {}).get("resume_results")
    if expect is None or not results:
        return
    for i, r in enumerate(results):
        if str(r.outcome) != str(expect):
            which = f"trial {i + 1} of {len(results)} (seed {r.seed})" if len(results) > 1 else "the trial"
            pytest.fail(f"resume-harness: {which} ended {r.verdict} ({r.outcome}), expected {expect}\n"
                        f"{render_report(r)}", pytrace=False)

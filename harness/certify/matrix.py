"""The certification matrix: systems under test, scenarios, fault classes, world sizes, and its cells.

A campaign (``CampaignSpec``, frozen) is everything that defines a certificate: SUT, strategy, backend,
world sizes, scenarios, fault classes, trials per cell and seed. Its ``campaign_id`` is a hash of
exactly that (and the harness version), so shards of one campaign recognise each other and shards of
another are refused by ``merge``. A ``Cell`` is one (scenario, fault class, world size); its id is a
stable string (``default|save:checkpoint.write|3``), and the cells are listed in one fixed order,
which sharding slices.

A scenario is a built-in scenario or a script (``harness certify path/to/train.py``, or
``--scenarios path``), labelled by its file name. A script with no probe calls is certified in auto
mode, as ``harness run`` tests it (``ScenarioSpec.auto`` forces it, ``--auto``); its fault classes are
``AUTO_FAULT_CLASSES`` (its own save calls instead of the reference checkpointer's points).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field

from harness.certify.errors import CertifyError
from harness.settings import STRATEGIES  # the scenarios' strategies ($HARNESS_STRATEGY), defined once
from harness.trace_schema import Point

#: The checkpoint fault points where a mid-save kill lands (docs/design.md section 4), in save order.
#: ``checkpoint.chunk`` is reached only inside files above 16 MiB: its cells are n/a for small models.
CHECKPOINT_POINTS = (Point.BEGIN, Point.WRITE, Point.CHUNK, Point.FSYNC,
                     Point.MANIFEST, Point.COMMIT, Point.COMMITTED, Point.ROTATE)

#: Fault class -> what its trials do (harness.certify.schedule draws their plans).
FAULT_CLASSES: dict[str, str] = {
    "step_kill": "SIGKILL rank 0 at a step",
    "one_rank": "SIGKILL one rank other than 0 at a step (n/a at world size 1)",
    "all_ranks": "SIGKILL every rank at a step",
    "sigterm": "SIGTERM at a step, on rank 0, another rank, or all",
    "exception": "an injected exception at a step, or inside a save",
    **{f"save:{p}": f"SIGKILL at the n-th {p} of a save after the first committed checkpoint"
       for p in CHECKPOINT_POINTS},
    "multi_fault": "2-3 faults in one trial: restarts in a row, a kill right after a checkpoint was loaded",
}
#: The class of a kill before one of the script's own save calls (auto mode's save points).
SAVE_CALL_CLASS = "save_call"
#: The fault classes of a script certified in auto mode (no probe calls): its own save calls are its points.
AUTO_FAULT_CLASSES: dict[str, str] = {
    **{c: FAULT_CLASSES[c] for c in ("step_kill", "one_rank", "all_ranks", "sigterm", "exception")},
    SAVE_CALL_CLASS: "SIGKILL before the n-th save call of the script (torch.save, safetensors.save_file, dcp.save, "
                     "deepspeed.save_checkpoint) after the first complete checkpoint; the 2nd call of a step is a "
                     "kill between two files of one checkpoint",
    "save:checkpoint.committed": "SIGKILL right after the n-th save call returned (auto mode's checkpoint.committed)",
    "multi_fault": "2-3 faults in one trial: restarts in a row",
}
#: Every fault class, in the campaign's order (what --classes accepts).
ALL_FAULT_CLASSES: dict[str, str] = {
    **{c: FAULT_CLASSES[c] for c in ("step_kill", "one_rank", "all_ranks", "sigterm", "exception")},
    SAVE_CALL_CLASS: AUTO_FAULT_CLASSES[SAVE_CALL_CLASS],
    **{c: d for c, d in FAULT_CLASSES.items() if c.startswith("save:")},
    "multi_fault": FAULT_CLASSES["multi_fault"],
}

#: SUT -> its scenarios: (label, built-in scenario or adapter script under scenarios/sut/, script args).
SUT_SCENARIOS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    # fp16: the only built-in scenario with a GradScaler and python-RNG draws (docs/state-coverage.md)
    "reference": (("default", "default", ()), ("fp16", "fp16", ())),
    "accelerate": (("accelerate", "_accelerate.py", ()),),
    "deepspeed": (("deepspeed", "_deepspeed.py", ()),),
    "torchdata": (("torchdata", "_torchdata.py", ()), ("torchdata_workers", "_torchdata.py", ("--num-workers", "2"))),
}
SUTS = tuple(SUT_SCENARIOS)
#: Built-in scenarios that train under some strategies only (label -> strategies): the default matrix of
#: another strategy leaves them out. fp16's GradScaler is DDP's; FSDP2 and DeepSpeed scale losses themselves.
SCENARIO_STRATEGIES: dict[str, tuple[str, ...]] = {"fp16": ("ddp",)}
#: SUT -> (import name, the pip extra that installs it)
SUT_LIBRARIES = {"accelerate": ("accelerate", "accelerate"), "deepspeed": ("deepspeed", "deepspeed"),
                 "torchdata": ("torchdata", "torchdata")}

DEFAULT_WORLD_SIZES = (1, 2, 3)
DEFAULT_TRIALS = 6
#: Trials per cell when --trials is not given: sized so that a certificate takes <= 10 minutes on a
#: 2-core machine (a third-party trial launches its library in every rank: 2-8 s instead of ~1 s).
SUT_DEFAULT_TRIALS = {"reference": DEFAULT_TRIALS, "accelerate": 3, "deepspeed": 2, "torchdata": 2}
DEFAULT_SEED = 0


@dataclass(frozen=True)
class ScenarioSpec:
    """A scenario of the matrix: its label, the ``harness run`` target, the script's arguments, and whether
    auto mode is forced (``--auto``; a script with no probe calls is recorded in auto mode anyway)."""

    label: str
    target: str
    args: tuple[str, ...] = ()
    auto: bool = False

    @property
    def is_script(self) -> bool:
        return self.target.endswith(".py") or os.path.isfile(self.target)

    def auto_mode(self) -> bool:
        """Whether it is certified in auto mode, as far as its source tells (``harness.engine.baseline.imports_probe``);
        a script that imports the probe but records nothing goes to auto mode at its baseline too."""
        if self.auto:
            return True
        if not self.is_script:
            return False
        from harness.engine.target import UsageError, resolve_target
        from harness.engine.baseline import imports_probe

        try:
            return not imports_probe(resolve_target(self.target))
        except UsageError:
            return False


@dataclass(frozen=True)
class Cell:
    scenario: str
    fault_class: str
    world_size: int

    @property
    def id(self) -> str:
        return f"{self.scenario}|{self.fault_class}|{self.world_size}"

    @classmethod
    def from_id(cls, text: str) -> "Cell":
        scenario, fault_class, ws = text.split("|")
        return cls(scenario, fault_class, int(ws))


def _sut_dir() -> str:
    spec = importlib.util.find_spec("harness.scenarios.sut")
    if spec is None or not spec.submodule_search_locations:
        raise CertifyError("the SUT adapters (harness.scenarios.sut) are not installed")
    return list(spec.submodule_search_locations)[0]


def _unique_labels(specs: list[ScenarioSpec]) -> tuple[ScenarioSpec, ...]:
    """Scripts are labelled by their file name; two with the same name by their paths as given instead."""
    from collections import Counter

    from dataclasses import replace

    counts = Counter(s.label for s in specs)
    out = [replace(s, label=s.target) if counts[s.label] > 1 and s.is_script else s for s in specs]
    if len({s.label for s in out}) != len(out):
        raise CertifyError(f"a scenario is given twice: {', '.join(sorted(s.target for s in out))}")
    return tuple(out)


def _display_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def sut_scenarios(sut: str, strategy: str = "ddp") -> tuple[ScenarioSpec, ...]:
    check_sut(sut)
    out = []
    for label, target, args in SUT_SCENARIOS[sut]:
        if strategy not in SCENARIO_STRATEGIES.get(label, (strategy,)):
            continue
        if target.endswith(".py"):
            target = _display_path(os.path.join(_sut_dir(), target))
        out.append(ScenarioSpec(label, target, tuple(args)))
    return tuple(out)


def check_sut(sut: str, *, installed: bool = False) -> None:
    if sut not in SUT_SCENARIOS:
        raise CertifyError(f"unknown SUT {sut!r}; choose one of {', '.join(SUTS)}")
    if installed and sut in SUT_LIBRARIES:
        module, extra = SUT_LIBRARIES[sut]
        if importlib.util.find_spec(module) is None:
            raise CertifyError(f"--sut {sut} needs the {module!r} library, which is not installed: "
                               f"pip install 'resume-harness[{extra}]' (or pip install -c ci/constraints.txt {module})")


def check_strategy(strategy: str, sut: str) -> None:
    if strategy not in STRATEGIES:
        raise CertifyError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if sut in ("accelerate", "torchdata") and strategy != "ddp":
        raise CertifyError(f"--sut {sut} trains with DDP only; --strategy {strategy} applies to --sut reference "
                           "(and deepspeed-zero0..3 to --sut deepspeed)")
    if sut == "deepspeed" and not (strategy == "ddp" or strategy.startswith("deepspeed-")):
        raise CertifyError(f"--sut deepspeed takes --strategy deepspeed-zero0..3, not {strategy}")
    if strategy.startswith("deepspeed-") and importlib.util.find_spec("deepspeed") is None:
        raise CertifyError(f"--strategy {strategy} needs the 'deepspeed' library, which is not installed: "
                           "pip install 'resume-harness[deepspeed]' (DS_BUILD_OPS=0)")


def parse_world_sizes(text) -> tuple[int, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = tuple(int(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise CertifyError(f"--world-sizes takes integers >= 1 separated by commas, e.g. 1,2,3; got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise CertifyError(f"--world-sizes takes integers >= 1 separated by commas, e.g. 1,2,3; got {text!r}")
    return tuple(sorted(set(sizes)))


@dataclass(frozen=True)
class CampaignSpec:
    """Everything that defines a certificate (and nothing about where or how fast it ran)."""

    sut: str = "reference"
    strategy: str = "ddp"
    backend: str = "gloo"
    world_sizes: tuple[int, ...] = DEFAULT_WORLD_SIZES
    trials: int = DEFAULT_TRIALS
    seed: int = DEFAULT_SEED
    scenarios: tuple[ScenarioSpec, ...] = field(default=())
    classes: tuple[str, ...] = tuple(FAULT_CLASSES)

    @classmethod
    def make(cls, *, sut="reference", strategy="ddp", backend="gloo", world_sizes=DEFAULT_WORLD_SIZES,
             trials=None, seed=DEFAULT_SEED, scenarios=None, classes=None,
             check_installed: bool = True, script_args=(), auto: bool = False) -> "CampaignSpec":
        """Check every argument (CertifyError names the bad one) and build the spec.

        scenarios: built-in scenario names and script paths (a script is labelled by its file name; it takes
        ``script_args``; ``auto`` forces auto mode for the scripts). classes: default, the classes of what the
        scenarios are: the reference checkpointer's (FAULT_CLASSES) for built-in scenarios and scripts with
        probe calls, the auto-mode ones (AUTO_FAULT_CLASSES) for scripts without."""
        check_sut(sut, installed=check_installed)
        check_strategy(strategy, sut)
        ws = parse_world_sizes(world_sizes)
        if trials is None:
            trials = SUT_DEFAULT_TRIALS[sut]
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            raise CertifyError(f"--trials must be an integer >= 1, got {trials!r}")
        user_scripts = 0
        if scenarios:
            specs = []
            for s in scenarios:
                if isinstance(s, ScenarioSpec):
                    specs.append(s)
                    continue
                if sut != "reference":
                    raise CertifyError("--scenarios (or a script) applies to --sut reference; a third-party SUT "
                                       "runs its adapter")
                from harness.engine.target import UsageError, resolve_target

                try:
                    tgt = resolve_target(s)
                except UsageError as e:
                    raise CertifyError(str(e)) from None
                if not tgt.builtin:
                    specs.append(ScenarioSpec(os.path.basename(s), s, tuple(script_args), bool(auto)))
                    user_scripts += 1
                    continue
                name = tgt.name
                if strategy not in SCENARIO_STRATEGIES.get(name, (strategy,)):
                    raise CertifyError(f"scenario {s!r} trains with --strategy "
                                       f"{' or '.join(SCENARIO_STRATEGIES[name])} only, not {strategy}")
                specs.append(ScenarioSpec(s.replace("/", "."), s, ()))
            scen = _unique_labels(specs)
        else:
            scen = sut_scenarios(sut, strategy)
        if (script_args or auto) and not user_scripts:
            raise CertifyError(f"{'script arguments (after --)' if script_args else '--auto'} apply to scripts; "
                               "give one (harness certify path/to/train.py)")
        if classes:
            cls_list = tuple(classes)
        else:
            modes = {s.auto_mode() for s in scen}
            wanted = (set(FAULT_CLASSES) if False in modes else set()) | (set(AUTO_FAULT_CLASSES) if True in modes else set())
            cls_list = tuple(c for c in ALL_FAULT_CLASSES if c in wanted)
        unknown = [c for c in cls_list if c not in ALL_FAULT_CLASSES]
        if unknown:
            raise CertifyError(f"unknown fault class(es) {', '.join(unknown)}; choose from {', '.join(ALL_FAULT_CLASSES)}")
        return cls(sut, strategy, backend, ws, trials, seed, scen, cls_list)

    def cells(self) -> list[Cell]:
        """Every cell, in the campaign's fixed order: scenario, then world size, then fault class."""
        return [Cell(s.label, c, ws) for s in self.scenarios for ws in self.world_sizes for c in self.classes]

    def scenario(self, label: str) -> ScenarioSpec:
        return next(s for s in self.scenarios if s.label == label)

    def to_json(self) -> dict:
        d = asdict(self)
        d["world_sizes"] = list(self.world_sizes)
        d["classes"] = list(self.classes)
        d["scenarios"] = [{"label": s.label, "target": s.target, "args": list(s.args), **({"auto": True} if s.auto else {})}
                          for s in self.scenarios]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CampaignSpec":
        return cls(d["sut"], d["strategy"], d["backend"], tuple(d["world_sizes"]), d["trials"], d["seed"],
                   tuple(ScenarioSpec(s["label"], s["target"], tuple(s["args"]), bool(s.get("auto", False)))
                         for s in d["scenarios"]),
                   tuple(d["classes"]))

    @property
    def campaign_id(self) -> str:
        from harness import __version__

        d = self.to_json()
        d["scenarios"] = [{**s, "target": os.path.basename(s["target"])} for s in d["scenarios"]]
        blob = json.dumps({"spec": d, "harness": __version__}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


__all__ = ["STRATEGIES", "CHECKPOINT_POINTS", "FAULT_CLASSES", "AUTO_FAULT_CLASSES", "ALL_FAULT_CLASSES",
           "SAVE_CALL_CLASS", "SUTS", "SUT_SCENARIOS", "SCENARIO_STRATEGIES", "SUT_LIBRARIES",
           "DEFAULT_WORLD_SIZES", "DEFAULT_TRIALS", "SUT_DEFAULT_TRIALS", "DEFAULT_SEED", "Cell", "ScenarioSpec", "CampaignSpec",
           "check_sut", "check_strategy", "parse_world_sizes", "sut_scenarios"]

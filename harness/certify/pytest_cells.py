"""Every cell of a certification matrix as a pytest item, so that pytest-xdist spreads a campaign.

Load the plugin and ask for the cells (the normal tests of the session are replaced by the cells)::

    python -m pytest -p harness.certify.pytest_cells --harness-certify -n auto \\
        [--certify-sut reference] [--certify-strategy ddp] [--certify-world-sizes 1,2,3] [--certify-trials 6] \\
        [--certify-seed 0] [--certify-classes ...] [--certify-scenarios ...] [--certify-auto] [--certify-out DIR] \
        [--junitxml FILE]

(or put ``pytest_plugins = ["harness.certify.pytest_cells"]`` in your root conftest.py instead of ``-p``).
Each item is one cell (``default|save:checkpoint.write|3``): it runs the cell's trials and fails
with the replay commands of its failing trials; an n/a cell is skipped. Each pytest process (xdist
worker) keeps one warm launcher. Each cell writes ``OUT/cells/<cell>.json``; at the end the main
process assembles ``certificate.json``, ``.md`` and ``.html`` in ``OUT`` (default
``harness-out/certify-pytest``) from every cell written there, so the certificate is the same as
``harness certify`` would write. pytest's own ``--junitxml`` gives a JUnit XML per cell.
"""

from __future__ import annotations

import json
import os
import time

import pytest

_STATE: dict = {}


def pytest_addoption(parser):
    g = parser.getgroup("harness-certify", "harness certify: every matrix cell as a pytest item")
    g.addoption("--harness-certify", action="store_true", help="collect the certification cells (instead of tests)")
    g.addoption("--certify-sut", default="reference", help="system under test (default reference)")
    g.addoption("--certify-strategy", default="ddp", help="strategy (default ddp)")
    g.addoption("--certify-backend", default="auto", help="backend (default auto)")
    g.addoption("--certify-world-sizes", default=None, help="comma-separated world sizes (default 1,2,3)")
    g.addoption("--certify-trials", type=int, default=None, help="trials per cell (default: harness certify's for the SUT)")
    g.addoption("--certify-seed", type=int, default=0, help="seed of the fault schedule (default 0)")
    g.addoption("--certify-scenarios", default=None,
                help="built-in scenarios and script paths (with --certify-sut reference); a script with no probe "
                     "calls is certified in auto mode, as harness certify does")
    g.addoption("--certify-auto", action="store_true", help="record the scripts in auto mode (as harness run --auto)")
    g.addoption("--certify-classes", default=None, help="only these fault classes")
    g.addoption("--certify-out", default="harness-out/certify-pytest", help="certificate folder")


def _spec(config):
    from harness.certify.matrix import DEFAULT_WORLD_SIZES, CampaignSpec
    from harness.engine import resolve_backend

    o = config.getoption
    return CampaignSpec.make(
        sut=o("certify_sut"), strategy=o("certify_strategy"), backend=resolve_backend(o("certify_backend")),
        world_sizes=o("certify_world_sizes") or DEFAULT_WORLD_SIZES, trials=o("certify_trials"),
        seed=o("certify_seed"), scenarios=o("certify_scenarios").split(",") if o("certify_scenarios") else None,
        classes=o("certify_classes").split(",") if o("certify_classes") else None, auto=o("certify_auto"))


class CellItem(pytest.Item):
    def __init__(self, *, cell, **kw):
        super().__init__(**kw)
        self.cell = cell

    def runtest(self):
        from harness.certify.campaign import CellRunner, cell_slug

        config = self.config
        runner = _STATE.get("runner")
        if runner is None:
            runner = _STATE["runner"] = CellRunner(_STATE["spec"], _STATE["out"])
        rec, trials = runner.run_cell(self.cell)
        os.makedirs(os.path.join(_STATE["out"], "cells"), exist_ok=True)
        with open(os.path.join(_STATE["out"], "cells", cell_slug(self.cell) + ".json"), "w") as f:
            json.dump({"cell": rec, "trials": trials, "baselines": runner.baselines,
                       "campaign": _STATE["spec"].campaign_id}, f)
        del config
        if rec["status"] == "n/a":
            pytest.skip(rec["reason"])
        from harness.oracle import VerdictKind

        bad = [t for t in trials if t["verdict"] != VerdictKind.PASS]
        if bad:
            raise CellFailure(self.cell.id, bad)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, CellFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"certify cell {self.cell.id}"


class CellFailure(Exception):
    def __init__(self, cell_id: str, trials: list[dict]):
        lines = [f"{cell_id}: {len(trials)} trial(s) not bit-exact"]
        for t in trials:
            lines.append(f"  trial {t['index']} plan {t['plan']}: {t['verdict']} ({t['outcome']}) {t['message']}")
            if t.get("diagnosis"):
                lines.append(f"    likely cause: {t['diagnosis']['cause']} - {t['diagnosis']['summary']}")
            if t.get("replay"):
                lines.append(f"    replay: {t['replay']}")
        super().__init__("\n".join(lines))


def pytest_configure(config):
    if config.getoption("harness_certify", default=False):
        _STATE.clear()
        _STATE["spec"] = _spec(config)
        _STATE["out"] = os.path.abspath(config.getoption("certify_out"))
        _STATE["t0"] = time.monotonic()
        if not hasattr(config, "workerinput"):  # the main process: a fresh cells/ folder
            import shutil

            from harness.certify.campaign import prepare_out

            prepare_out(_STATE["out"], force=True)
            shutil.rmtree(os.path.join(_STATE["out"], "cells"), ignore_errors=True)


def pytest_ignore_collect(collection_path, config):
    """With --harness-certify the session runs the cells only: no test file is collected."""
    if config.getoption("harness_certify", default=False):
        return True
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if not config.getoption("harness_certify", default=False):
        return
    items[:] = [CellItem.from_parent(session, name=cell.id, cell=cell) for cell in _STATE["spec"].cells()]


def pytest_sessionfinish(session, exitstatus):
    runner = _STATE.pop("runner", None)
    if runner is not None:
        runner.close()
    config = session.config
    if not config.getoption("harness_certify", default=False) or hasattr(config, "workerinput"):
        return
    assemble_from_cells(_STATE["out"], _STATE["spec"], wall_s=time.monotonic() - _STATE["t0"])


def assemble_from_cells(out: str, spec, *, wall_s: float) -> dict | None:
    """certificate.{json,md,html} in ``out`` from the cells/*.json the items wrote (None if none)."""
    from harness.certify.campaign import assemble, write_reports

    folder = os.path.join(out, "cells")
    if not os.path.isdir(folder):
        return None
    order = {c.id: i for i, c in enumerate(spec.cells())}
    recs, trials, baselines = [], [], {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            d = json.load(f)
        if d["campaign"] != spec.campaign_id:
            continue
        recs.append(d["cell"])
        trials += d["trials"]
        baselines.update(d["baselines"])
    recs.sort(key=lambda r: order.get(r["id"], len(order)))
    trials.sort(key=lambda t: (order.get(t["cell"], len(order)), t["index"]))
    cert = assemble(spec, recs, trials, baselines, wall_s=wall_s, shard=None, n_cells=len(recs),
                    command="pytest --harness-certify", passes_strategy=True)
    write_reports(cert, out)
    return cert


__all__ = ["CellItem", "assemble_from_cells"]

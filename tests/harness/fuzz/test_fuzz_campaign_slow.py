"""Long fuzz campaigns (``-m slow``): every buggy scenario is found and shrunk; the default scenario survives."""

from __future__ import annotations

import pytest

from harness.engine import list_scenarios
from harness.faults import FaultPlan
from harness.fuzz import Campaign, CampaignConfig, StopReason

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("default" not in list_scenarios(), reason="the built-in scenarios are not installed")]


def _buggy() -> list[str]:
    try:
        from harness.scenarios.buggy import EXPECTED
    except ImportError:
        return []
    return sorted(EXPECTED)


@pytest.mark.parametrize("target", _buggy())
def test_every_buggy_scenario_is_found_and_shrunk_to_one_fault(pool, tmp_path, target):
    config = CampaignConfig(target, trials=80, seed=0, db=None, out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool).run()
    assert result.stop is StopReason.FAILURE, (result.stop, result.message, result.rejected)
    (failure,) = result.failures
    assert result.exit_code == (3 if failure.outcome == "rng_only" else 1)  # harness run's code for the minimal plan
    plan = FaultPlan.parse(failure.plan)
    assert len(plan) == 1 and failure.shrunk and failure.plan in failure.replay
    assert failure.first_divergence is not None or failure.outcome != "divergence"


def test_a_minute_on_the_default_scenario_passes_and_covers_every_class(pool, tmp_path):
    config = CampaignConfig("default", time_s=60, seed=1, db=None, out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool).run()
    assert result.exit_code == 0 and result.stop is StopReason.TIME, (result.message, result.failures)
    assert result.passes >= 20 and not result.failures
    never = set(result.coverage.never_tried)
    assert not never & {"SIGKILL", "SIGTERM", "exception", "one rank", "all ranks", "multi-fault plans", "mid-save",
                        "just after a checkpoint", "accumulation boundary"}, never

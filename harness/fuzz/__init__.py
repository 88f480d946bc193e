"""``harness fuzz``: Hypothesis searches fault plans over the baseline's steps, points, ranks and signals.

    space.py      FaultSpace: the search space and its boundaries, derived from the baseline's trace
    campaign.py   Campaign: the loop (hypothesis.find over trials), stop reasons, result types
    coverage.py   Coverage: which fault kinds, points and boundary classes were exercised
    render.py     progress bar, text report, JSON
"""

from harness.fuzz.campaign import (Campaign, CampaignConfig, CampaignResult, Failure, Progress, StopReason,
                                   TrialRecord)
from harness.fuzz.coverage import Coverage
from harness.fuzz.space import FaultSpace

__all__ = ["Campaign", "CampaignConfig", "CampaignResult", "Failure", "Progress", "StopReason", "TrialRecord",
           "Coverage", "FaultSpace"]

"""``harness certify``: certify a checkpointing implementation's resume determinism over a matrix of
scenarios x fault classes x world sizes, with a report in JSON, Markdown and HTML.

    matrix.py       CampaignSpec (frozen): SUT, strategy, world sizes, scenarios, fault classes; its Cells
    schedule.py     the seeded fault plans of each cell, from the baseline's Profile
    campaign.py     running the cells' trials (one warm launcher, the baseline cache), progress on stderr
    curves.py       loss curves of a trial as data; plots.py draws them (matplotlib, Agg)
    report_json.py  the certificate and its schema (version 1); report_md.py, report_html.py (+ templates/)
    report_view.py  what both readable reports show; junit.py: JUnit XML
    shard.py        --shard i/N slices and merge
    pytest_cells.py every cell as a pytest item (pytest-xdist spreads a campaign)
    (the command line: harness/cli/certify.py)
"""

from harness.certify.campaign import run_campaign, write_reports
from harness.certify.errors import CertifyError
from harness.certify.matrix import FAULT_CLASSES, STRATEGIES, SUTS, CampaignSpec, Cell
from harness.certify.schedule import NotApplicable, Profile, plans_for
from harness.certify.shard import merge, parse_shard, select

__all__ = ["run_campaign", "write_reports", "CertifyError", "FAULT_CLASSES", "STRATEGIES", "SUTS", "CampaignSpec",
           "Cell", "NotApplicable", "Profile", "plans_for", "merge", "parse_shard", "select"]

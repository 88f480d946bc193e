"""The certificate in JSON (schema, version), Markdown, HTML and JUnit, from a synthetic certificate."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from harness.certify import junit, report_html, report_json, report_md
from harness.certify.errors import CertifyError

from certify_support import certificate


def test_json_schema_summary_and_verdict_rules(tmp_path):
    cert = certificate()
    s = cert["summary"]
    assert cert["schema"] == "resume-harness-certificate" and cert["version"] == 1
    # 3 cells at ws 1 (one n/a) and 3 at ws 3; ws-3 step_kill trials fail
    assert (s["cells"], s["cells_na"], s["cells_failed"], s["cells_passed"]) == (6, 1, 1, 4)
    assert (s["trials"], s["failed"], s["verdict"], s["exit_code"]) == (10, 2, "fail", 1)
    assert s["trials_per_min"] == 60.0
    ok = certificate(fail_ws3=False)["summary"]
    assert (ok["verdict"], ok["exit_code"]) == ("pass", 0)
    path = report_json.write(cert, str(tmp_path))
    assert report_json.read(str(tmp_path)) == json.loads(open(path).read()) == cert


@pytest.mark.parametrize("breakage, match", [
    (lambda c: c.update(version=99), "version 99"),
    (lambda c: c.update(schema="other"), "not a resume-harness certificate"),
    (lambda c: c.pop("environment"), "lacks environment"),
    (lambda c: c["cells"][0].update(status="green"), "bad cell record"),
    (lambda c: c["trials"][0].pop("replay"), "bad trial record"),
])
def test_json_validation_names_what_is_wrong(breakage, match):
    cert = certificate()
    breakage(cert)
    with pytest.raises(CertifyError, match=match):
        report_json.validate(cert)


def test_markdown_has_the_matrix_failures_and_replays():
    md = report_md.render(certificate())
    assert "## resume-harness certificate: reference / ddp — FAIL" in md
    assert "| scenario | ranks | step kill | one rank | save: write |" in md
    assert "| default | 3 | ❌ 0/2 | ✅ 2/2 | ✅ 2/2 |" in md
    assert "| default | 1 | ✅ 2/2 | n/a | ✅ 2/2 |" in md
    assert "likely cause: `reduction_order`" in md
    assert "replay: `harness run default --nproc 3 --kill 12`" in md
    assert "not applicable" in md


@pytest.fixture(scope="module")
def page():
    return report_html.render(certificate())


def test_html_is_self_contained_with_matrix_plots_and_failures(page):
    assert page.count('data-status="fail"') == 1 and page.count('data-status="pass"') == 4
    assert page.count('data-status="n/a"') == 1
    assert page.count('<img class="plot"') >= 3  # 2 failures + passing examples
    assert 'src="data:image/png;base64,iVBOR' in page  # embedded PNG
    assert "http://" not in page and "https://" not in page  # works offline
    assert "reduction_order" in page and "net.0.weight" in page and "harness run default --nproc 3 --kill 12" in page


def test_html_escapes_text():
    cert = certificate()
    for t in cert["trials"]:
        t["curves"] = None  # no plots: quick
    bad = next(t for t in cert["trials"] if t["verdict"] == "fail")
    bad["message"] = "<script>alert(1)</script>"
    page = report_html.render(cert)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_junit_one_testcase_per_cell():
    root = ET.fromstring(junit.render(certificate()))
    cases = root.findall(".//testcase")
    assert len(cases) == 6
    assert len(root.findall(".//failure")) == 1 and len(root.findall(".//skipped")) == 1
    failure = root.find(".//failure")
    assert "harness run default --nproc 3 --kill 12" in failure.text

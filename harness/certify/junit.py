"""A JUnit XML of a certificate, for CI dashboards: one testsuite per scenario, one testcase per cell
(a failure or error element listing its non-passing trials with their replay commands; n/a and
not-run cells are skipped)."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def render(cert: dict) -> str:
    from harness.oracle import VerdictKind

    trials: dict[str, list] = {}
    for t in cert["trials"]:
        trials.setdefault(t["cell"], []).append(t)
    root = ET.Element("testsuites", name=f"harness certify {cert['campaign']['spec']['sut']}",
                      tests=str(len(cert["cells"])), time=str(cert["summary"]["wall_s"]))
    suites: dict[str, ET.Element] = {}
    for cell in cert["cells"]:
        suite = suites.get(cell["scenario"])
        if suite is None:
            suite = suites[cell["scenario"]] = ET.SubElement(root, "testsuite", name=f"certify.{cell['scenario']}")
        ts = trials.get(cell["id"], [])
        case = ET.SubElement(suite, "testcase", classname=f"certify.{cell['scenario']}.ws{cell['world_size']}",
                             name=cell["fault_class"], time=f"{sum(t['wall_s'] or 0 for t in ts):.3f}")
        bad = [t for t in ts if t["verdict"] != VerdictKind.PASS]
        text = "\n".join(f"trial {t['index']} plan {t['plan']}: {t['verdict']} ({t['outcome']}) {t['message']}"
                         + (f"\n  replay: {t['replay']}" if t["replay"] else "") for t in bad)
        if cell["status"] == "fail":
            ET.SubElement(case, "failure", message=f"{cell['failed']} of {cell['trials']} trials failed").text = text
        elif cell["status"] == "error":
            ET.SubElement(case, "error", message=cell.get("reason") or f"{cell['errors']} of {cell['trials']} trials "
                                                                        "errored").text = text
        elif cell["status"] in ("n/a", "not_run"):
            ET.SubElement(case, "skipped", message=cell.get("reason") or cell["status"])
        else:
            ET.SubElement(case, "system-out").text = f"{cell['passed']} of {cell['trials']} trials bit-exact"
    for name, suite in suites.items():
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
        suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write(cert: dict, path: str) -> str:
    with open(path, "w") as f:
        f.write(render(cert))
    return path


__all__ = ["render", "write"]

"""JUnit XML for CI systems: one testcase per board (rank) of a validate, bench or run job."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Case:
    classname: str  # e.g. "validate.sim-g1"
    name: str  # e.g. "rank 0 board SG1-0001"
    status: Literal["passed", "failure", "error"]  # failure: the check said no; error: it could not run
    message: str = ""
    text: str = ""  # the failure's details (a report as JSON)
    time_s: float | None = None


def junit_xml(cases: Sequence[Case], *, suite: str) -> str:
    failures = sum(c.status == "failure" for c in cases)
    errors = sum(c.status == "error" for c in cases)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root, "testsuite", name=suite.strip(), tests=str(len(cases)), failures=str(failures), errors=str(errors)
    )
    for c in cases:
        attrs = {"classname": c.classname, "name": c.name}
        if c.time_s is not None:
            attrs["time"] = f"{c.time_s:.3f}"
        case = ET.SubElement(ts, "testcase", attrs)
        if c.status == "passed":
            continue
        el = ET.SubElement(case, c.status, message=c.message or c.status)
        el.text = c.text
    return ET.tostring(root, encoding="unicode", xml_declaration=True)

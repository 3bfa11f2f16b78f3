"""Comparing outputs: tolerances, statistics, reports, localisation, reduction."""

from fleetyard.validation.aggregate import ComparisonAccumulator
from fleetyard.validation.compare import ComparisonReport, OutputComparison, compare_arrays, compare_outputs
from fleetyard.validation.report import render_html, render_table
from fleetyard.validation.tolerances import Tolerance, TolerancePolicy, default_tolerance, parse_overrides

__all__ = [
    "ComparisonAccumulator",
    "ComparisonReport",
    "OutputComparison",
    "Tolerance",
    "TolerancePolicy",
    "compare_arrays",
    "compare_outputs",
    "default_tolerance",
    "parse_overrides",
    "render_html",
    "render_table",
]

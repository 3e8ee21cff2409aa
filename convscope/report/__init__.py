"""The report: a static, offline site of everything the workflow found (`build_report`)."""

from convscope.report.checks import chance_warning
from convscope.report.inputs import ReportInputs
from convscope.report.site import build_report

__all__ = ["ReportInputs", "build_report", "chance_warning"]

"""Every selector the browser tests use, in one place: the dashboard's ``data-testid``s."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


BOARD_CELL = tid("board-row")  # one per board on /ui/fleet, with data-state
BOARD_STATE = tid("board-state")  # the board's state on its own page
DRAIN_REASON = tid("drain-reason")
DRAIN_BUTTON = tid("drain-button")
UNDRAIN_REASON = tid("undrain-reason")
UNDRAIN_BUTTON = tid("undrain-button")
JOB_STATE = tid("job-state")  # the job's state on its own page
JOBS_TABLE = tid("jobs-table")  # the jobs of /ui/jobs
LOGIN_TOKEN = tid("login-token")
LOGIN_BUTTON = tid("login-button")
WHO = tid("who")  # who is logged in
DAG = tid("dag")  # a pipeline run's DAG
EVAL_PICK_A = tid("pick-a")  # the baseline
EVAL_PICK_B = tid("pick-b")  # compared with it
EVAL_COMPARE = tid("eval-compare-button")
EVAL_COMPARISON = tid("eval-comparison")  # one per version compared
COMPARE_ERROR = tid("compare-error")

CHARTS = ".plotly-graph-div"  # every plotly chart of a page (plotly's own class)
DRAWN = "svg.main-svg"  # inside a chart, once plotly has drawn it


def board_cells(page: Page) -> dict[str, str]:
    """The fleet page's boards: id -> state, as shown."""
    shown: dict[str, str] = {}
    for cell in page.locator(BOARD_CELL).all():
        board_id = (cell.get_attribute("href") or "").rsplit("/", 1)[-1]
        shown[board_id] = cell.get_attribute("data-state") or ""
    return shown


def table_rows(table: Locator) -> list[dict[str, str]]:
    """A table's rows as {header: cell text}: columns found by their header, not their position
    (a cell's own tables, e.g. a job's metrics, stay inside its text)."""
    rows = table.first.locator(":scope > tbody > tr, :scope > tr")
    headers = [h.strip() for h in rows.first.locator(":scope > th").all_inner_texts()]
    out = []
    for tr in rows.all()[1:]:
        cells = [c.strip() for c in tr.locator(":scope > td").all_inner_texts()]
        out.append(dict(zip(headers, cells, strict=False)))
    return out

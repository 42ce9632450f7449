"""A log (not a terminal) gets a console wide enough for the verdict tables."""

from cfrbench.console import LOG_WIDTH, log_width


def test_terminal_lets_rich_measure() -> None:
    assert log_width(True, "40") is None


def test_log_is_wide_unless_columns_says_otherwise() -> None:
    assert log_width(False, None) == LOG_WIDTH >= 150
    assert log_width(False, "200") == 200
    assert log_width(False, "wide") == LOG_WIDTH
    assert log_width(False, "0") == LOG_WIDTH

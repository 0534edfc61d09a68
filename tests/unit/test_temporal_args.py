"""The dev server's command line: the queue readers' poll limit is raised (the 50 ms-per-activity steps)."""

from __future__ import annotations

from workers.stack import processes


def _values(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--dynamic-config-value"]


def test_every_history_queue_reader_may_poll_far_more_than_20_times_a_second() -> None:
    values = _values(processes.temporal_args(db_file=None, port=1, ui_port=None, http_port=2, metrics_port=3,
                                             search_attributes={}))
    for queue in ("transfer", "timer", "visibility"):
        setting = next(v for v in values if v.startswith(f"history.{queue}ProcessorMaxPollRPS="))
        assert int(setting.split("=", 1)[1]) >= 1000, setting

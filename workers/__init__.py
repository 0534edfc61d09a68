"""Processes and wiring: worker, CLI, settings, local stack supervisor, schedules, codec server."""

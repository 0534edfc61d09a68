"""Durable processes: deterministic orchestration; decisions in westworld/, effects in activities/."""

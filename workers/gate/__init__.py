"""The charter gate: the process that receives node telemetry, enforces the charter and serves what it keeps."""

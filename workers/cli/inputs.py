"""Reading workflow inputs from YAML or JSON files, with every error reported at once with its path.

Every input file goes through the safe loader (``westworld/documents.py``): at most ``Limits.max_bytes`` are read
(so ``/dev/zero`` or a huge file is refused, not swallowed), the text must be UTF-8, and alias bombs, deep nesting
and duplicate keys are refused with their line. Durations in the validated model must be finite, not negative and
at most 10 years.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from westworld.documents import LIMITS, MAX_DURATION, Limits, load_document, out_of_range
from westworld.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)


_ALLOWED = {"time_delta_parsing": f" (allowed: 0s to {MAX_DURATION.days}d, i.e. 10 years)",
            "time_delta_type": f" (allowed: 0s to {MAX_DURATION.days}d, i.e. 10 years)"}


def read_input(path: Path, limits: Limits = LIMITS) -> bytes:
    """The bytes of an input file, reading at most one byte more than ``limits.max_bytes``."""
    try:
        with path.open("rb") as f:
            content = f.read(limits.max_bytes + 1)
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read: {err.strerror}") from err
    if len(content) > limits.max_bytes:
        raise InvalidInput(f"{path}: larger than the {limits.max_bytes} bytes an input document may have")
    return content


def load_input(path: Path, limits: Limits = LIMITS) -> Any:
    """The data of a YAML or JSON input file (safe loader); InvalidInput naming the file and the place otherwise."""
    content = read_input(path, limits)
    try:
        return load_document(content, str(path), limits)
    except InvalidInput as err:
        raise InvalidInput(err.message) from err


def load_model(path: Path, model: type[M]) -> M:
    """``model`` validated from a YAML or JSON file; one InvalidInput listing every problem otherwise."""
    data = load_input(path)
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        value = model.model_validate(data)
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg'].removeprefix('Value error, ')}"
                 f"{_ALLOWED.get(e['type'], '')}"
                 for e in err.errors()]
        raise InvalidInput(f"{path}: {len(lines)} problem(s):\n" + "\n".join(lines)) from err
    if problems := out_of_range(value):
        raise InvalidInput(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    return value

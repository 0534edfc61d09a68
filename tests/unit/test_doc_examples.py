"""Every ```json example in docs/*.md parses and validates against the pydantic input model it names.

Each block is preceded by a marker, ``<!-- model: westworld.vote.DaoVoteInput -->`` (module and class), or
``<!-- model: none (why) -->`` for JSON that is not one of ours (a third party's wire format). A string holding a
placeholder such as ``"<64 hex: X25519 public key>"`` is the reader's to fill in: a validation error at such a value
is expected, any other error fails the test (a wrong field name, a wrong type, a value out of range, a missing
field). So an example pasted into the Temporal UI with its placeholders filled in starts the workflow.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```json[ \t]*\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*model:\s*([\w.]+)[^>]*-->\s*$")
PLACEHOLDER = re.compile(r"<[^<>]+>")


@dataclass(frozen=True)
class Example:
    doc: str
    line: int
    model: str | None  # None: no marker before the block
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def examples() -> list[Example]:
    found = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in BLOCK.finditer(text):
            before = text[: m.start()].rstrip("\n").splitlines()
            marker = next((MARKER.search(line) for line in reversed(before[-3:]) if MARKER.search(line)), None)
            found.append(Example(path.name, text[: m.start()].count("\n") + 1,
                                 marker.group(1) if marker else None, m.group(1)))
    return found


def _value_at(data: Any, loc: tuple[int | str, ...]) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _model(dotted: str) -> type[BaseModel]:
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseModel), f"{dotted} is not a pydantic model"
    return cls


EXAMPLES = examples()


def test_the_docs_have_json_examples() -> None:
    assert len(EXAMPLES) >= 10, [str(e) for e in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_json_example_validates_against_its_model(example: Example) -> None:
    assert example.model is not None, (
        f"{example}: a ```json block needs <!-- model: module.Class --> (or <!-- model: none (why) -->) before it")
    data = json.loads(example.text)  # a block that is not JSON fails here, naming line and column
    if example.model == "none":
        return
    try:
        _model(example.model).model_validate(data)
    except ValidationError as err:
        real = [e for e in err.errors()
                if not (isinstance(v := _value_at(data, tuple(e["loc"])), str) and PLACEHOLDER.search(v))]
        assert not real, f"{example} does not validate as {example.model}:\n" + "\n".join(
            f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in real)


def test_a_wrong_field_is_caught() -> None:
    """The check can fail: a misspelt field in an example is reported."""
    from westworld.vote import DaoVoteInput

    with pytest.raises(ValidationError, match="votingwindow"):
        DaoVoteInput.model_validate({"proposal": {"id": "p1", "title": "t"}, "votingwindow": "PT1M"})

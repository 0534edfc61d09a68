"""Pure parts of the experiments' local side: the mesh builds/knobs table and PromQL selector rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from westworld.errors import InvalidInput
from westworld.mesh import DEFAULT_VERSION, VERSIONS, behaviour
from westworld.series import escape_label_value, expand, render_selector


def test_faulty_build_is_slower_and_lossier_than_the_good_one() -> None:
    good, faulty = behaviour("1.4.0", {}), behaviour("1.5.0-rc1", {})
    assert faulty["relay_delay_ms"] > good["relay_delay_ms"] and faulty["drop_rate"] > good["drop_rate"]


def test_config_overrides_the_version_and_unknown_versions_behave_like_the_default() -> None:
    assert behaviour("1.5.0-rc1", {"drop_rate": "0", "relay_delay_ms": "0"})["drop_rate"] == 0.0
    assert behaviour("9.9.9", {}) == behaviour(DEFAULT_VERSION, {})
    assert DEFAULT_VERSION in VERSIONS


@pytest.mark.parametrize(("config", "named"), [
    ({"relay_speed": "1"}, "relay_speed"), ({"drop_rate": "x"}, "drop_rate"), ({"drop_rate": "1.5"}, "drop_rate"),
    ({"probe_interval_ms": "0"}, "probe_interval_ms"),
])
def test_bad_knobs_are_refused_naming_them(config: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        behaviour("1.4.0", config)


def test_selector_rendering() -> None:
    assert render_selector({"sandbox": "e-1", "arm": "baseline"}) == '{sandbox="e-1",arm="baseline"}'
    assert expand("sum(a{selector}) / sum(b{selector})", {"x": "1"}) == 'sum(a{x="1"}) / sum(b{x="1"})'
    with pytest.raises(InvalidInput, match="9bad"):
        render_selector({"9bad": "v"})


@given(st.text())
def test_escaped_values_cannot_end_their_string(value: str) -> None:
    escaped = escape_label_value(value)
    # Every quote is escaped (preceded by an odd run of backslashes) and no raw newline remains.
    assert "\n" not in escaped
    for i, ch in enumerate(escaped):
        if ch == '"':
            run = len(escaped[:i]) - len(escaped[:i].rstrip("\\"))
            assert run % 2 == 1

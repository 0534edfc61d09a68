"""The pure rendering of a kubernetes sandbox: names, image references, the egress allow-list, Chaos Mesh specs."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from westworld import kube_objects as ko
from westworld.errors import InvalidInput
from westworld.sandbox import Fault, FaultKind

DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(("entry", "expected"), [
    ("10.0.0.0/8", ("10.0.0.0/8", None)),
    ("10.1.2.3", ("10.1.2.3/32", None)),
    ("192.0.2.7:443", ("192.0.2.7/32", 443)),
    ("10.1.0.0/16:8080", ("10.1.0.0/16", 8080)),
    ("2001:db8::/32", ("2001:db8::/32", None)),
    ("[2001:db8::1]:53", ("2001:db8::1/128", 53)),
])
def test_egress_entries_become_cidrs_and_ports(entry: str, expected: tuple[str, int | None]) -> None:
    assert ko.parse_egress(entry) == expected


@pytest.mark.parametrize(("entry", "message"), [
    ("example.org:443", "not a CIDR or IP"),
    ("10.0.0.1:http", "port 'http'"),
    ("10.0.0.1:70000", "port '70000'"),
])
def test_bad_egress_entries_are_refused_naming_the_entry(entry: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"egress_allow entry {entry!r}")) as err:
        ko.parse_egress(entry)
    assert message in err.value.message


@pytest.mark.parametrize(("image", "repo", "tag"), [
    ("ghcr.io/westworld/mesh-node:1.4.0", "ghcr.io/westworld/mesh-node", "1.4.0"),
    ("localhost:5000/mesh:v2", "localhost:5000/mesh", "v2"),
    ("localhost:5000/mesh", "localhost:5000/mesh", "latest"),
    ("mesh@sha256:abc", "mesh", "latest"),
])
def test_image_references(image: str, repo: str, tag: str) -> None:
    assert (ko.image_repo(image), ko.image_tag(image)) == (repo, tag)


@given(st.text(min_size=1, max_size=200))
def test_object_names_from_fault_ids_are_valid_and_stable(key: str) -> None:
    name = ko.object_name(key, "ww")
    assert DNS_NAME.match(name) and len(name) <= 63
    assert name == ko.object_name(key, "ww")


def test_distinct_fault_ids_get_distinct_names() -> None:
    assert ko.object_name("exp:latency:1", "ww") != ko.object_name("exp-latency-1", "ww")


def test_sandbox_id_must_make_a_namespace_name() -> None:
    assert ko.namespace_name("exp-1-baseline") == "ww-exp-1-baseline"
    for bad in ("Exp", "a_b", "x-", "a" * 61):
        with pytest.raises(InvalidInput, match="sandbox_id"):
            ko.namespace_name(bad)


def test_a_node_kill_is_pod_chaos_and_selects_as_many_pods_as_nodes() -> None:
    fault = Fault(kind=FaultKind.NODE_KILL, duration=timedelta(seconds=5), nodes=[0, 3])
    obj = ko.chaos_object("ww-x", "x", fault, "f1")
    assert obj["kind"] == "PodChaos"
    assert obj["spec"] == {"action": "pod-kill", "mode": "fixed", "value": "2",
                           "selector": {"namespaces": ["ww-x"], "labelSelectors": {ko.LABEL_APP: ko.WORKLOAD_NAME}}}


@pytest.mark.parametrize(("millicores", "text"), [(100, "100m"), (1000, "1"), (4000, "4"), (1500, "1500m")])
def test_cpu_quantities_are_canonical(millicores: int, text: str) -> None:
    assert ko.cpu(millicores) == text


@pytest.mark.parametrize(("mebibytes", "text"), [(128, "128Mi"), (1024, "1Gi"), (3072, "3Gi"), (1024 * 1024, "1Ti")])
def test_memory_quantities_are_canonical(mebibytes: int, text: str) -> None:
    assert ko.memory(mebibytes) == text

"""``ebpf features`` reports the probes beyond types and helpers: bounded
loops, the large instruction limit, ISA v2/v3/v4, map flags and link kinds,
and the hooks that need a link kind of their own -- each agreeing with the
probe it runs."""

from __future__ import annotations

import pytest
from test_cli_kernel import _status

import ebpf
from ebpf import features
from ebpf.link import LinkType

from cliutil import cli, cli_json

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def doc():
    return cli_json("features", "--no-helpers")


def test_misc_probes_listed(doc):
    for name in ("bounded_loops", "large_instructions", "v2_isa", "v3_isa", "v4_isa"):
        assert doc["misc"][name]["status"] == _status(getattr(features, f"have_{name}")), name


def test_map_flags_listed(doc):
    flags = doc["map_flags"]
    for flag in (ebpf.MapFlags.NO_PREALLOC, ebpf.MapFlags.MMAPABLE, ebpf.MapFlags.INNER_MAP,
                 ebpf.MapFlags.SEGV_ON_FAULT):
        assert flags[flag.name.lower()]["status"] == _status(features.have_map_flag, flag), flag
    # Flags without a probe are left out rather than guessed.
    for flag in ebpf.MapFlags:
        try:
            features.have_map_flag(flag)
        except ValueError:
            assert flag.name.lower() not in flags
        except ebpf.NotSupportedError:
            pass


def test_link_types_listed(doc):
    links = doc["link_types"]
    assert set(links) == {"kprobe_multi", "uprobe_multi", "tcx", "netkit", "netfilter"}
    for name in links:
        assert links[name]["status"] == _status(features.have_link_type, LinkType[name.upper()]), name
        if links[name]["status"] != "yes":
            assert links[name]["detail"]  # says what is missing


def test_hooks_of_the_new_link_kinds(doc):
    kinds = doc["attach_kinds"]
    assert kinds["tcx"]["status"] == _status(features.have_link_type, LinkType.TCX)
    assert kinds["netkit"]["status"] == _status(features.have_link_type, LinkType.NETKIT)
    assert kinds["uprobe.multi"]["status"] == _status(features.have_link_type, LinkType.UPROBE_MULTI)
    assert kinds["kprobe.multi"]["status"] == _status(features.have_link_type, LinkType.KPROBE_MULTI)


def test_text_has_the_new_sections():
    out = cli("features", "--no-helpers").stdout
    assert "map flags:" in out and "link types:" in out
    assert "\n  v4_isa " in out and "\n  bounded_loops " in out and "\n  uprobe_multi " in out

"""ebpf.histogram: BCC's print_log2_hist / print_linear_hist text, from
lists and from real maps."""

from __future__ import annotations

import io

import pytest

import ebpf
from ebpf import histogram as H

LOG2 = """\
     usecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 3        |*****************                       |
         4 -> 7          : 7        |****************************************|
         8 -> 15         : 1        |*****                                   |"""


def test_log2_text_is_bccs():
    assert H.log2_histogram([0, 3, 7, 1, 0, 0], "usecs") == LOG2


def test_log2_bcc_slots_and_leading_zeros():
    # BCC's bpf_log2l(): slot i holds 2^(i-1) .. 2^i - 1; slot 0 (value 0) is not printed
    text = H.log2_histogram([5, 0, 3, 7], "ms", bcc_slots=True)
    assert text.splitlines()[1:] == [
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 3        |*****************                       |",
        "         4 -> 7          : 7        |****************************************|",
    ]
    stripped = H.log2_histogram([0, 0, 0, 4], "x", strip_leading_zero=True).splitlines()
    assert len(stripped) == 2 and stripped[1].startswith("         8 -> 15 ")


def test_log2_wide_above_slot_32():
    counts = [0] * 40
    counts[35] = 2
    lines = H.log2_histogram(counts, "ns").splitlines()
    assert lines[0] == "               ns                            : count     distribution"
    assert lines[-1] == f"{1 << 35:>20} -> {(1 << 36) - 1:<20} : 2        |{'*' * 20}|"
    assert len(lines) == 37


def test_empty_histograms_print_nothing():
    assert H.log2_histogram([0, 0]) == "" and H.linear_histogram([]) == ""


def test_linear_text_is_bccs():
    assert H.linear_histogram([1, 0, 2], "kbytes", base=10, step=5) == (
        "     kbytes        : count     distribution\n"
        "        10         : 1        |********************                    |\n"
        "        15         : 0        |                                        |\n"
        "        20         : 2        |****************************************|"
    )


def test_log2_slot():
    assert [H.log2_slot(v) for v in (0, 1, 2, 3, 4, 7, 8, 1023, 1024)] == [0, 0, 1, 1, 2, 2, 3, 9, 10]
    counts = [0] * 12
    for v in (1, 2, 3, 1000, 1001):
        counts[H.log2_slot(v)] += 1
    assert counts[:2] == [1, 2] and counts[9] == 2


@pytest.mark.kernel
def test_from_an_array_map_of_counters():
    spec = ebpf.MapSpec(name="dist", type=ebpf.MapType.ARRAY, key_size=4, value_size=8, max_entries=6)
    with ebpf.Map(spec) as m:
        for i, n in enumerate([0, 3, 7, 1]):
            m[i.to_bytes(4, "little")] = n.to_bytes(8, "little")
        assert H.counts_from_map(m) == [0, 3, 7, 1, 0, 0]
        out = io.StringIO()
        H.print_log2_hist(m, "usecs", file=out)
        assert out.getvalue() == LOG2 + "\n"


@pytest.mark.kernel
def test_per_key_histograms_from_a_map_of_struct_hist():
    from conftest import fixture_path

    coll_spec = ebpf.load_collection_spec(fixture_path("cli_exec.o"))
    ms = coll_spec.maps["lengths_by_uid"]
    assert H.slots_member(ms.value) == "slots"
    assert H.slots_member(coll_spec.maps["name_lengths"].value) is None
    with ebpf.Map(ms) as m:
        m[7] = {"slots": [0, 1, 2, 0, 0, 0, 0, 0]}
        m[3] = {"slots": [4, 0, 0, 0, 0, 0, 0, 0]}
        assert H.histograms_from_map(m) == {3: [4, 0, 0, 0, 0, 0, 0, 0], 7: [0, 1, 2, 0, 0, 0, 0, 0]}
        out = io.StringIO()
        H.print_log2_hist(m, "bytes", file=out, section_header="uid")
        text = out.getvalue()
        assert text.index("\nuid = 3\n") < text.index("\nuid = 7\n")
        assert "         2 -> 3          : 1        |********************                    |" in text

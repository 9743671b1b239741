"""Load a clang-built object, set a constant, run the program on packets
with BPF_PROG_TEST_RUN, and read its map and globals from Python.

    sudo python3 examples/counter.py examples/build/counter.o
"""

import struct
import sys

import ebpf


def ipv4_packet(proto: int) -> bytes:
    eth = b"\xff" * 6 + b"\x00" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20, 0, 0, 64, proto, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    return eth + ip + b"\0" * 8


def main(path: str) -> None:
    spec = ebpf.load_collection_spec(path)
    print("maps:", ", ".join(f"{n} ({m.type.name})" for n, m in spec.maps.items()))
    print("programs:", ", ".join(f"{n} ({p.type.name})" for n, p in spec.programs.items()))

    spec.variables["verdict"].set(1)  # a const volatile: fixed at load time

    with ebpf.Collection(spec) as coll:
        prog = coll.programs["count_protocols"]
        for proto in [6, 6, 17, 1, 6]:  # TCP, TCP, UDP, ICMP, TCP
            result = prog.run(ipv4_packet(proto))
            assert result.retval == 1
        counts = {k: v for k, v in coll.maps["proto_counts"].items() if v}
        print("packets by protocol:", counts)
        print("packets seen:", coll.variables["packets_seen"].get())
        assert counts == {6: 3, 17: 1, 1: 1}, counts


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/build/counter.o")

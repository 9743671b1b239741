"""The shim's error conversion: each error carries the libbpf warnings of its
own call and no others (issue #11 item 7), per thread."""

from __future__ import annotations

import errno
import os
import threading

import pytest

import ebpf
from ebpf import AttachType, MapSpec, MapType, _libbpf
from ebpf.errors import EBPFError, NotSupportedError, PermissionDeniedError

pytestmark = pytest.mark.kernel


def _missing() -> str:
    return f"ebpf_no_such_function_{os.getpid()}_{threading.get_ident()}"


def _fail_with_warning(name: str) -> EBPFError:
    """A failed libbpf call that prints a warning naming ``name``."""
    with pytest.raises(EBPFError) as exc:
        _libbpf.lib.libbpf_find_vmlinux_btf_id(name.encode(), int(AttachType.TRACE_FENTRY))
    return exc.value


def _freeze_twice() -> EBPFError:
    """An error the objects layer builds for a failed syscall (no libbpf call)."""
    with ebpf.Map(MapSpec("frozen", MapType.ARRAY, 4, 4, 1)) as m:
        m.freeze()
        with pytest.raises(EBPFError) as again:
            m.freeze()
    return again.value


def test_an_error_carries_its_own_warning():
    name = _missing()
    err = _fail_with_warning(name)
    assert err.errno == errno.ENOENT
    assert f"{name} is not found in vmlinux BTF" in str(err)


def test_a_later_error_carries_no_warning_of_an_earlier_call():
    name = _missing()
    _fail_with_warning(name)
    # A checked call that fails without printing anything...
    with pytest.raises(EBPFError) as later:
        _libbpf.lib.bpf_link_get_fd_by_id(0xFFFFFFF0)
    assert later.value.errno == errno.ENOENT
    assert name not in str(later.value)
    # ... and an error built for a failed syscall of the objects layer.
    assert name not in str(_freeze_twice())


def test_warnings_of_another_thread_stay_there():
    _libbpf.clear_warnings()
    name = _missing() + "_other"
    seen = []

    def other() -> None:
        seen.append(str(_fail_with_warning(name)))
        seen.append(" ".join(_libbpf.warnings()))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert name in seen[0] and name in seen[1]  # that thread saw its own
    assert not any(name in w for w in _libbpf.warnings())
    assert name not in _libbpf.last_warning()
    with pytest.raises(EBPFError) as mine:
        _libbpf.lib.bpf_link_get_fd_by_id(0xFFFFFFF0)
    assert name not in str(mine.value)


def test_a_probe_leaves_nothing_behind_for_later_errors():
    # Public calls: a feature probe that makes libbpf warn, then a failure.
    target = f"ebpf_no_such_target_{os.getpid()}"
    with pytest.raises(NotSupportedError):
        ebpf.features.have_iterator(target)
    assert target not in str(_freeze_twice())


def test_warnings_of_a_sequence_of_calls():
    # Loaders decode a failed sequence themselves: warnings() is what this
    # thread saw since clear_warnings().
    first, second = _missing() + "_a", _missing() + "_b"
    _fail_with_warning(first)
    _libbpf.clear_warnings()
    _fail_with_warning(second)
    got = " ".join(_libbpf.warnings())
    assert second in got and first not in got
    assert second in _libbpf.last_warning()


def test_errno_error_types():
    assert type(_libbpf.errno_error(errno.EPERM, "x")) is PermissionDeniedError
    assert "CAP_BPF" in str(_libbpf.errno_error(errno.EPERM, "x"))
    assert type(_libbpf.errno_error(errno.EACCES, "x")) is PermissionDeniedError
    assert isinstance(_libbpf.errno_error(errno.EOPNOTSUPP, "x"), NotSupportedError)
    assert isinstance(_libbpf.errno_error(524, "x"), NotSupportedError)  # ENOTSUPP
    e = _libbpf.errno_error(-errno.EINVAL, "doing x", ["libbpf: first", "libbpf: why"])
    assert e.errno == errno.EINVAL and str(e) == "doing x: Invalid argument (libbpf: why)"
    assert str(_libbpf.errno_error(errno.EINVAL, "doing x")) == "doing x: Invalid argument"

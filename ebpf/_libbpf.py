"""The shim: the only module that touches the C library.

It finds and loads ``libbpf.so.1`` once (``EBPF_LIBBPF=/path/libbpf.so.1``
overrides the search), declares every C signature the library uses in one
table, defines the ``*_opts`` structs in their libbpf 1.1.2 layout, turns
libbpf's negative-errno returns into typed exceptions and routes libbpf's print
callback into the ``ebpf.libbpf`` logger.

Optional symbols (absent from older libbpf releases) resolve to ``None``;
:func:`require` turns their absence into :class:`NotSupportedError` naming the
libbpf version that has them.  Loading is lazy so that ``import ebpf`` and the
pure-Python parts (specs of ``asm``/``btf``) work without libbpf.
"""

from __future__ import annotations

import collections
import ctypes
import errno as _errno
import os
import struct
import sys
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .errors import ENOTSUPP, EBPFError, NotSupportedError, PermissionDeniedError, VerifierError

# The "ebpf.libbpf" logger.  Made when libbpf is loaded, not at import:
# logging costs more to import than the rest of `import ebpf, ebpf.link`.
log: Any = None

# --------------------------------------------------------------------------
# Opaque handle types: distinct pointer classes so a bpf_map* is never passed
# where a bpf_program* is expected.


class _Opaque(Structure):
    pass


class bpf_object(_Opaque):
    pass


class bpf_map(_Opaque):
    pass


class bpf_program(_Opaque):
    pass


class bpf_link(_Opaque):
    pass


class btf(_Opaque):
    pass


class ring_buffer(_Opaque):
    pass


class user_ring_buffer(_Opaque):
    pass


class perf_buffer(_Opaque):
    pass


bpf_object_p = POINTER(bpf_object)
bpf_map_p = POINTER(bpf_map)
bpf_program_p = POINTER(bpf_program)
bpf_link_p = POINTER(bpf_link)
btf_p = POINTER(btf)

# --------------------------------------------------------------------------
# *_opts structs, laid out as in libbpf 1.1.2.  ``sz`` tells libbpf how much
# of the struct we know about, so newer libbpf releases accept them too.


class _Opts(Structure):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sz = ctypes.sizeof(self)


class bpf_object_open_opts(_Opts):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_attach_prog_fd", c_uint32),  # removed field, kept for layout
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class bpf_map_create_opts(_Opts):
    _fields_ = [
        ("sz", c_size_t),
        ("btf_fd", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("inner_map_fd", c_uint32),
        ("map_flags", c_uint32),
        ("map_extra", c_uint64),
        ("numa_node", c_uint32),
        ("map_ifindex", c_uint32),
    ]


class bpf_prog_load_opts(_Opts):
    _fields_ = [
        ("sz", c_size_t),
        ("attempts", c_int),
        ("expected_attach_type", c_uint32),
        ("prog_btf_fd", c_uint32),
        ("prog_flags", c_uint32),
        ("prog_ifindex", c_uint32),
        ("kern_version", c_uint32),
        ("attach_btf_id", c_uint32),
        ("attach_prog_fd", c_uint32),
        ("attach_btf_obj_fd", c_uint32),
        ("fd_array", c_void_p),
        ("func_info", c_void_p),
        ("func_info_cnt", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("line_info", c_void_p),
        ("line_info_cnt", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("log_level", c_uint32),
        ("log_size", c_uint32),
        ("log_buf", c_void_p),
    ]


class bpf_test_run_opts(_Opts):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class bpf_map_batch_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class bpf_get_fd_by_id_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("open_flags", c_uint32)]


class bpf_obj_get_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("file_flags", c_uint32)]


class bpf_link_create_opts(_Opts):
    # The union after target_btf_id: perf_event.bpf_cookie / tracing.cookie
    # share its first 8 bytes; kprobe_multi spells out its own fields.
    _fields_ = [
        ("sz", c_size_t),
        ("flags", c_uint32),
        ("iter_info", c_void_p),
        ("iter_info_len", c_uint32),
        ("target_btf_id", c_uint32),
        ("kprobe_multi_flags", c_uint32),  # also low half of bpf_cookie
        ("kprobe_multi_cnt", c_uint32),  # also high half of bpf_cookie
        ("kprobe_multi_syms", c_void_p),
        ("kprobe_multi_addrs", c_void_p),
        ("kprobe_multi_cookies", c_void_p),
    ]

    def set_cookie(self, cookie: int) -> None:
        """perf_event.bpf_cookie / tracing.cookie (the union's first u64)."""
        self.kprobe_multi_flags = cookie & 0xFFFFFFFF
        self.kprobe_multi_cnt = cookie >> 32


class bpf_link_update_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("old_prog_fd", c_uint32)]


class bpf_prog_attach_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("flags", c_uint), ("replace_prog_fd", c_int)]


class bpf_tc_hook(_Opts):
    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_uint32), ("parent", c_uint32)]


class bpf_tc_opts(_Opts):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class bpf_xdp_attach_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("old_prog_fd", c_int)]


# --------------------------------------------------------------------------
# Error conventions.  libbpf 1.x returns -errno from int functions and NULL
# (with errno set) from pointer functions.

NEG_ERRNO = "neg_errno"  # int result; < 0 is -errno
NULL_ERRNO = "null_errno"  # pointer result; NULL means failure, errno set
NONE = "none"  # result is a value; no error convention


def errno_error(err: int, what: str, messages: Sequence[str] = ()) -> EBPFError:
    """Build the typed error for a failed libbpf/bpf() call.

    libbpf's own error codes (4000+) are rendered with ``libbpf_strerror``.
    ``messages`` are the warnings libbpf printed during the failed call and
    only that call (the shim's checked functions pass their own; see
    :func:`warnings` for a sequence of calls); the last one is appended
    because it usually says *which* map or program failed and why.
    """
    err = abs(err)
    text = strerror(err)
    hint = messages[-1] if messages else ""
    msg = f"{what}: {text}" + (f" ({hint})" if hint else "")
    if err == _errno.EPERM:  # from bpf() nearly always missing capabilities
        return PermissionDeniedError(msg + " (bpf() needs CAP_BPF, plus CAP_PERFMON/CAP_NET_ADMIN for some types, "
                                     "or CAP_SYS_ADMIN)", err)
    if err == _errno.EACCES:
        return PermissionDeniedError(msg, err)
    if err in (_errno.EOPNOTSUPP, ENOTSUPP):
        return NotSupportedError(what, errno=err, detail=text + (f" ({hint})" if hint else ""))
    return EBPFError(msg, err)


def _checked(name: str, fn: Any, conv: str) -> Callable[..., Any]:
    """``fn`` with its error convention applied: a failure raises the typed
    error, carrying the libbpf warnings this thread saw during this very call.

    The success path costs one read of the warning counter and uses only
    what this closure holds, so handles may call it from their finalizers
    at interpreter shutdown.
    """
    counter = _printed_count
    since = _printed_since
    get_errno = ctypes.get_errno
    make_error = errno_error
    neg = conv == NEG_ERRNO
    einval = _errno.EINVAL

    def call(*args: Any) -> Any:
        start = counter[0]
        result = fn(*args)
        if neg:
            if result < 0:
                raise make_error(-result, name, since(start))
        elif not result:
            raise make_error(get_errno() or einval, name, since(start))
        return result

    call.__name__ = call.__qualname__ = name
    return call


# --------------------------------------------------------------------------
# The signature table: name -> (restype, argtypes, convention, since).
# ``since`` is None for symbols every libbpf 1.x has, else the first libbpf
# version that exports the symbol; such symbols are optional.

_int, _u32, _u64, _sz, _ptr, _str = c_int, c_uint32, c_uint64, c_size_t, c_void_p, c_char_p
_print_fn_t = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

SIGNATURES: Dict[str, Tuple[Any, List[Any], str, Optional[str]]] = {
    # library
    "libbpf_major_version": (_u32, [], NONE, None),
    "libbpf_minor_version": (_u32, [], NONE, None),
    "libbpf_version_string": (_str, [], NONE, None),
    "libbpf_strerror": (_int, [_int, _ptr, _sz], NONE, None),
    "libbpf_set_print": (_ptr, [_print_fn_t], NONE, None),
    "libbpf_num_possible_cpus": (_int, [], NEG_ERRNO, None),
    "libbpf_probe_bpf_prog_type": (_int, [_u32, _ptr], NONE, None),
    "libbpf_probe_bpf_map_type": (_int, [_u32, _ptr], NONE, None),
    "libbpf_probe_bpf_helper": (_int, [_u32, _u32, _ptr], NONE, None),
    # bpf_object
    "bpf_object__open_mem": (bpf_object_p, [_ptr, _sz, POINTER(bpf_object_open_opts)], NULL_ERRNO, None),
    "bpf_object__load": (_int, [bpf_object_p], NONE, None),  # caller decodes the failure
    "bpf_object__close": (None, [bpf_object_p], NONE, None),
    "bpf_object__name": (_str, [bpf_object_p], NONE, None),
    "bpf_object__kversion": (c_uint, [bpf_object_p], NONE, None),
    "bpf_object__btf": (btf_p, [bpf_object_p], NONE, None),
    "bpf_object__next_map": (bpf_map_p, [bpf_object_p, bpf_map_p], NONE, None),
    "bpf_object__next_program": (bpf_program_p, [bpf_object_p, bpf_program_p], NONE, None),
    "btf__raw_data": (_ptr, [btf_p, POINTER(_u32)], NONE, None),
    "btf__new": (btf_p, [_ptr, _u32], NULL_ERRNO, None),
    "btf__free": (None, [btf_p], NONE, None),
    "btf__load_into_kernel": (_int, [btf_p], NEG_ERRNO, None),
    "btf__fd": (_int, [btf_p], NONE, None),
    # bpf_map (object phase)
    "bpf_map__name": (_str, [bpf_map_p], NONE, None),
    "bpf_map__type": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_type": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__key_size": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_key_size": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__value_size": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_value_size": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__max_entries": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_max_entries": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__map_flags": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_map_flags": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__numa_node": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__set_numa_node": (_int, [bpf_map_p, _u32], NEG_ERRNO, None),
    "bpf_map__map_extra": (_u64, [bpf_map_p], NONE, None),
    "bpf_map__set_map_extra": (_int, [bpf_map_p, _u64], NEG_ERRNO, None),
    "bpf_map__btf_key_type_id": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__btf_value_type_id": (_u32, [bpf_map_p], NONE, None),
    "bpf_map__is_internal": (c_bool, [bpf_map_p], NONE, None),
    "bpf_map__initial_value": (_ptr, [bpf_map_p, POINTER(_sz)], NONE, None),
    "bpf_map__set_initial_value": (_int, [bpf_map_p, _ptr, _sz], NEG_ERRNO, None),
    "bpf_map__pin_path": (_str, [bpf_map_p], NONE, None),
    "bpf_map__set_pin_path": (_int, [bpf_map_p, _str], NEG_ERRNO, None),
    "bpf_map__set_autocreate": (_int, [bpf_map_p, c_bool], NEG_ERRNO, None),
    "bpf_map__inner_map": (bpf_map_p, [bpf_map_p], NONE, None),
    "bpf_map__set_inner_map_fd": (_int, [bpf_map_p, _int], NEG_ERRNO, None),
    "bpf_map__reuse_fd": (_int, [bpf_map_p, _int], NEG_ERRNO, None),
    "bpf_map__fd": (_int, [bpf_map_p], NONE, None),
    # bpf_program (object phase)
    "bpf_program__name": (_str, [bpf_program_p], NONE, None),
    "bpf_program__section_name": (_str, [bpf_program_p], NONE, None),
    "bpf_program__type": (_u32, [bpf_program_p], NONE, None),
    "bpf_program__set_type": (_int, [bpf_program_p, _u32], NEG_ERRNO, None),
    "bpf_program__expected_attach_type": (_u32, [bpf_program_p], NONE, None),
    "bpf_program__set_expected_attach_type": (_int, [bpf_program_p, _u32], NEG_ERRNO, None),
    "bpf_program__flags": (_u32, [bpf_program_p], NONE, None),
    "bpf_program__set_flags": (_int, [bpf_program_p, _u32], NEG_ERRNO, None),
    "bpf_program__insns": (_ptr, [bpf_program_p], NONE, None),
    "bpf_program__insn_cnt": (_sz, [bpf_program_p], NONE, None),
    "bpf_program__set_insns": (_int, [bpf_program_p, _ptr, _sz], NEG_ERRNO, None),
    "bpf_program__set_autoload": (_int, [bpf_program_p, c_bool], NEG_ERRNO, None),
    "bpf_program__set_log_level": (_int, [bpf_program_p, _u32], NEG_ERRNO, None),
    "bpf_program__set_log_buf": (_int, [bpf_program_p, _ptr, _sz], NEG_ERRNO, None),
    "bpf_program__set_attach_target": (_int, [bpf_program_p, _int, _str], NEG_ERRNO, None),
    "bpf_program__fd": (_int, [bpf_program_p], NONE, None),
    # low-level bpf(2) wrappers
    "bpf_map_create": (_int, [_u32, _str, _u32, _u32, _u32, POINTER(bpf_map_create_opts)], NEG_ERRNO, None),
    # The element calls are on the hot path: no errcheck (each costs ~100 ns);
    # maps.py interprets the return value itself.
    "bpf_map_lookup_elem": (_int, [_int, _ptr, _ptr], NONE, None),
    "bpf_map_lookup_elem_flags": (_int, [_int, _ptr, _ptr, _u64], NONE, None),
    "bpf_map_update_elem": (_int, [_int, _ptr, _ptr, _u64], NONE, None),
    "bpf_map_delete_elem": (_int, [_int, _ptr], NONE, None),
    "bpf_map_lookup_and_delete_elem": (_int, [_int, _ptr, _ptr], NONE, None),
    "bpf_map_get_next_key": (_int, [_int, _ptr, _ptr], NONE, None),
    "bpf_map_lookup_batch": (_int, [_int, _ptr, _ptr, _ptr, _ptr, POINTER(_u32), POINTER(bpf_map_batch_opts)],
                             NONE, None),
    "bpf_map_lookup_and_delete_batch": (_int, [_int, _ptr, _ptr, _ptr, _ptr, POINTER(_u32),
                                               POINTER(bpf_map_batch_opts)], NONE, None),
    "bpf_map_update_batch": (_int, [_int, _ptr, _ptr, POINTER(_u32), POINTER(bpf_map_batch_opts)], NONE, None),
    "bpf_map_delete_batch": (_int, [_int, _ptr, POINTER(_u32), POINTER(bpf_map_batch_opts)], NONE, None),
    "bpf_map_freeze": (_int, [_int], NEG_ERRNO, None),
    "bpf_prog_load": (_int, [_u32, _str, _str, _ptr, _sz, POINTER(bpf_prog_load_opts)], NONE, None),
    "bpf_prog_test_run_opts": (_int, [_int, POINTER(bpf_test_run_opts)], NEG_ERRNO, None),
    "bpf_obj_pin": (_int, [_int, _str], NEG_ERRNO, None),
    "bpf_obj_get": (_int, [_str], NEG_ERRNO, None),
    "bpf_obj_get_opts": (_int, [_str, POINTER(bpf_obj_get_opts)], NEG_ERRNO, None),
    "bpf_obj_get_info_by_fd": (_int, [_int, _ptr, POINTER(_u32)], NEG_ERRNO, None),
    "bpf_map_get_fd_by_id": (_int, [_u32], NEG_ERRNO, None),
    "bpf_prog_get_fd_by_id": (_int, [_u32], NEG_ERRNO, None),
    "bpf_link_get_fd_by_id": (_int, [_u32], NEG_ERRNO, None),
    "bpf_btf_get_fd_by_id": (_int, [_u32], NEG_ERRNO, None),
    "bpf_btf_load": (_int, [_ptr, _sz, _ptr], NEG_ERRNO, None),
    "bpf_enable_stats": (_int, [_int], NEG_ERRNO, None),
    "libbpf_find_vmlinux_btf_id": (_int, [_str, _u32], NEG_ERRNO, None),
    # links and attachment (fd-based: programs here own no bpf_program*)
    "bpf_link_create": (_int, [_int, _int, _u32, POINTER(bpf_link_create_opts)], NEG_ERRNO, None),
    "bpf_link_detach": (_int, [_int], NEG_ERRNO, None),
    "bpf_link_update": (_int, [_int, _int, POINTER(bpf_link_update_opts)], NEG_ERRNO, None),
    "bpf_iter_create": (_int, [_int], NEG_ERRNO, None),
    "bpf_raw_tracepoint_open": (_int, [_str, _int], NEG_ERRNO, None),
    "bpf_prog_attach": (_int, [_int, _int, _u32, c_uint], NEG_ERRNO, None),
    "bpf_prog_attach_opts": (_int, [_int, _int, _u32, POINTER(bpf_prog_attach_opts)], NEG_ERRNO, None),
    "bpf_prog_detach2": (_int, [_int, _int, _u32], NEG_ERRNO, None),
    "bpf_prog_query": (_int, [_int, _u32, _u32, POINTER(_u32), _ptr, POINTER(_u32)], NEG_ERRNO, None),
    "bpf_xdp_attach": (_int, [_int, _int, _u32, POINTER(bpf_xdp_attach_opts)], NEG_ERRNO, None),
    "bpf_xdp_detach": (_int, [_int, _u32, POINTER(bpf_xdp_attach_opts)], NEG_ERRNO, None),
    "bpf_xdp_query_id": (_int, [_int, _int, POINTER(_u32)], NEG_ERRNO, None),
    "bpf_tc_hook_create": (_int, [POINTER(bpf_tc_hook)], NEG_ERRNO, None),
    "bpf_tc_hook_destroy": (_int, [POINTER(bpf_tc_hook)], NEG_ERRNO, None),
    "bpf_tc_attach": (_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)], NEG_ERRNO, None),
    "bpf_tc_detach": (_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)], NEG_ERRNO, None),
    "bpf_tc_query": (_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)], NEG_ERRNO, None),
    # -- links helpers: add entries below this line --
    # -- readers helpers: add entries below this line --
    # ring_buffer: the sample callback is passed as a c_void_p (a cast CFUNCTYPE);
    # consume returns the callback's negative value when it stopped early.
    "ring_buffer__new": (_ptr, [_int, _ptr, _ptr, _ptr], NULL_ERRNO, None),
    "ring_buffer__free": (None, [_ptr], NONE, None),
    "ring_buffer__consume": (_int, [_ptr], NONE, None),
    "ring_buffer__poll": (_int, [_ptr, _int], NONE, None),
    "ring_buffer__epoll_fd": (_int, [_ptr], NONE, None),
    # -- loader (reading ELF, loading objects and programs): add entries below --
    # -- maps and marshalling: add entries below --
    # -- links, info, features: add entries below --
    # -- btf (dumping, validation): add entries below --
    # btf__parse reads raw BTF or an ELF's .BTF; the dumper's printf callback
    # is passed as a plain pointer (libc's vfprintf, see dump_btf_c).
    "btf__parse": (btf_p, [_str, _ptr], NULL_ERRNO, None),
    "btf__parse_split": (btf_p, [_str, btf_p], NULL_ERRNO, None),
    "btf__type_cnt": (_u32, [btf_p], NONE, None),
    "btf__type_by_id": (_ptr, [btf_p, _u32], NONE, None),
    "btf_dump__new": (_ptr, [btf_p, _ptr, _ptr, _ptr], NULL_ERRNO, None),
    "btf_dump__dump_type": (_int, [_ptr, _u32], NEG_ERRNO, None),
    "btf_dump__free": (None, [_ptr], NONE, None),
    # -- command line: add entries below --
    # Kernel objects by id.  They return -errno (ENOENT past the last id);
    # next_id() reads that.
    "bpf_prog_get_next_id": (_int, [_u32, POINTER(_u32)], NONE, None),
    "bpf_map_get_next_id": (_int, [_u32, POINTER(_u32)], NONE, None),
    "bpf_link_get_next_id": (_int, [_u32, POINTER(_u32)], NONE, None),
    "bpf_btf_get_next_id": (_int, [_u32, POINTER(_u32)], NONE, None),
}

_CDLL: Optional[ctypes.CDLL] = None
_LOAD_LOCK = threading.Lock()
_FUNCS: Dict[str, Any] = {}
_MISSING: Dict[str, Optional[str]] = {}
_load_error: Optional[BaseException] = None

LIBRARY_ENV = "EBPF_LIBBPF"


def _library_path() -> str:
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        return explicit
    return "libbpf.so.1"


def _load() -> ctypes.CDLL:
    global _CDLL, _load_error
    with _LOAD_LOCK:
        if _CDLL is not None:
            return _CDLL
        path = _library_path()
        try:
            cdll = ctypes.CDLL(path, use_errno=True)
        except OSError as exc:
            _load_error = exc
            raise NotSupportedError(
                "libbpf", min_libbpf="1.0", detail=f"cannot load {path!r} ({exc}); "
                f"install libbpf1 or set {LIBRARY_ENV}"
            ) from None
        for name, (restype, argtypes, conv, since) in SIGNATURES.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                if since is None and name not in _OPTIONAL_IN_1X:
                    raise NotSupportedError(
                        f"libbpf symbol {name}", min_libbpf="1.0", detail=f"missing from {path}"
                    ) from None
                _MISSING[name] = since
                continue
            fn.restype = restype
            fn.argtypes = argtypes
            if conv in (NEG_ERRNO, NULL_ERRNO):
                fn = _checked(name, fn, conv)
            _FUNCS[name] = fn
            # Resolved once here, so that lib.<name> never needs __getattr__
            # (and its module globals) again, not even at shutdown.
            lib.__dict__.setdefault(name, fn)
        _CDLL = cdll
        _install_print_callback(cdll)
        return cdll


# Symbols that some 1.x releases lack; absence must degrade, not fail import.
_OPTIONAL_IN_1X: Dict[str, str] = {
    "bpf_obj_get_opts": "1.0",
    "bpf_map_get_fd_by_id": "1.0",
}


class _Lib:
    """Attribute access to the declared functions: ``lib.bpf_map_create(...)``."""

    def __getattr__(self, name: str) -> Any:
        if name not in SIGNATURES:
            raise AttributeError(f"{name} is not declared in ebpf._libbpf.SIGNATURES")
        _load()
        fn = _FUNCS.get(name)
        if fn is None:
            since = _MISSING.get(name)
            raise NotSupportedError(f"libbpf function {name}", min_libbpf=since)
        return fn


lib = _Lib()


def has(name: str) -> bool:
    """Whether the installed libbpf exports ``name`` (declared in the table)."""
    _load()
    return name in _FUNCS


def require(name: str, feature: Optional[str] = None) -> Any:
    """Return the function, or raise NotSupportedError naming the version needed."""
    _load()
    fn = _FUNCS.get(name)
    if fn is None:
        raise NotSupportedError(feature or f"libbpf function {name}",
                                min_libbpf=_MISSING.get(name) or SIGNATURES[name][3])
    return fn


# Hot-path entry points without argtypes.  With argtypes ctypes runs a
# from_param conversion per argument, about 40% of the cost of a map lookup
# (bench/maps.py); without them it passes Python ints as C int, bytes and
# ctypes arrays as pointers and None as NULL.  That is only safe when the
# caller passes exactly those types, and every 64-bit argument as a ctypes
# instance (see :func:`u64`): maps.py's element operations do.  The table
# entry stays the documentation of the C signature.
# They also come from a second handle on the library opened without
# use_errno: they return -errno themselves, and saving errno around each
# call costs another ~30 ns (dlopen hands back the same library).
_UNCHECKED: Dict[str, Any] = {}
_HOT_CDLL: Optional[ctypes.CDLL] = None
UNCHECKED_OK = ("bpf_map_lookup_elem", "bpf_map_lookup_elem_flags", "bpf_map_update_elem", "bpf_map_delete_elem",
                "bpf_map_lookup_and_delete_elem", "bpf_map_get_next_key")


def unchecked(name: str) -> Any:
    """``name`` as a ctypes function with its restype but no argtypes."""
    global _HOT_CDLL
    fn = _UNCHECKED.get(name)
    if fn is None:
        if name not in UNCHECKED_OK:
            raise ValueError(f"{name} is not cleared for calls without argtypes")
        _load()
        with _LOAD_LOCK:
            if _HOT_CDLL is None:
                _HOT_CDLL = ctypes.CDLL(_library_path())
        # A fresh function object: the one in _FUNCS keeps its argtypes.
        fn = _HOT_CDLL[name]
        fn.restype = SIGNATURES[name][0]
        _UNCHECKED[name] = fn
    return fn


_U64: Dict[int, Any] = {}


def u64(value: int) -> Any:
    """A cached ``c_uint64`` for a 64-bit argument of an unchecked call."""
    v = _U64.get(value)
    if v is None:
        v = c_uint64(value)
        if len(_U64) < 64:
            _U64[value] = v
    return v


def version() -> Tuple[int, int]:
    """The installed libbpf's (major, minor)."""
    return (int(lib.libbpf_major_version()), int(lib.libbpf_minor_version()))


def version_string() -> str:
    return (lib.libbpf_version_string() or b"").decode()


# libbpf's own error codes (enum libbpf_errno) start here.
LIBBPF_ERRNO_START = 4000


def strerror(err: int) -> str:
    """libbpf's text for an errno or one of its own (4000+) error codes."""
    err = abs(err)
    if err < LIBBPF_ERRNO_START:
        return os.strerror(err)
    try:
        buf = ctypes.create_string_buffer(128)
        lib.libbpf_strerror(err, buf, len(buf))
        return buf.value.decode(errors="replace")
    except EBPFError:
        return f"libbpf error {err}"


def num_possible_cpus() -> int:
    global _NCPUS
    if _NCPUS is None:
        _NCPUS = int(lib.libbpf_num_possible_cpus())
    return _NCPUS


_NCPUS: Optional[int] = None

# --------------------------------------------------------------------------
# libbpf's print callback -> logging.  libbpf prints from the thread that
# called it, so warnings are collected per thread: each checked call keeps
# the ones printed while it ran (its error carries only those), and
# :func:`warnings` returns what this thread saw since :func:`clear_warnings`,
# for callers that decode a failed sequence of calls themselves (a load).

_libc = ctypes.CDLL(None, use_errno=True)
_vsnprintf = _libc.vsnprintf
_vsnprintf.argtypes = [c_void_p, c_size_t, c_char_p, c_void_p]
_vsnprintf.restype = c_int

_LEVELS = {0: 30, 1: 20, 2: 10}  # libbpf's WARN/INFO/DEBUG as logging.WARNING/INFO/DEBUG

# libbpf guesses at causes that do not apply here; they are logged but kept
# out of error messages.  Since 5.11 the kernel charges BPF memory to the
# memory cgroup, not RLIMIT_MEMLOCK, and every supported host is newer; and
# CONFIG_BPF_SYSCALL is evidently set when bpf() answered at all.
_MISLEADING = ("ulimit -l", "RLIMIT_MEMLOCK", "CONFIG_BPF_SYSCALL")


class _ThreadMessages(threading.local):
    """libbpf's warnings since this thread's last clear_warnings() (bounded:
    a failed load can print thousands of verifier lines)."""

    def __init__(self) -> None:
        self.recent: Deque[str] = collections.deque(maxlen=32)


_thread_messages = _ThreadMessages()

# Every kept warning of every thread, numbered, so that a failed call can
# take those printed in its own thread after the number it started at.
# libbpf prints synchronously in the calling thread; the lock only orders
# the numbering of threads printing at once.
_printed: Deque[Tuple[int, int, str]] = collections.deque(maxlen=256)  # (number, thread, text)
_printed_count = [0]
_printed_lock = threading.Lock()


def _printed_since(start: int) -> List[str]:
    """This thread's warnings numbered after ``start``."""
    me = threading.get_ident()
    return [text for n, tid, text in list(_printed) if n > start and tid == me]


def _on_print(level: int, fmt: bytes, args: int) -> int:
    try:
        pylevel = _LEVELS.get(level, 10)
        keep = level == 0
        if not keep and not log.isEnabledFor(pylevel):
            return 0
        buf = ctypes.create_string_buffer(1024)
        _vsnprintf(buf, len(buf), fmt, args)
        text = buf.value.decode(errors="replace").rstrip("\n")
        if keep and not any(m in text for m in _MISLEADING):
            _thread_messages.recent.append(text)
            with _printed_lock:
                n = _printed_count[0] = _printed_count[0] + 1
                _printed.append((n, threading.get_ident(), text))
        log.log(pylevel, "%s", text)
    except Exception:  # never let an exception cross back into C
        pass
    return 0


_print_cb = _print_fn_t(_on_print)


def _install_print_callback(cdll: ctypes.CDLL) -> None:
    global log
    import logging

    log = logging.getLogger("ebpf.libbpf")
    # A library logs; the application decides where it goes.  Without a
    # handler of the package's own, libbpf's warnings would reach stderr of
    # programs that never set up logging (logging's last resort).
    package = logging.getLogger("ebpf")
    if not any(isinstance(h, logging.NullHandler) for h in package.handlers):
        package.addHandler(logging.NullHandler())
    fn = cdll.libbpf_set_print
    fn.restype = c_void_p
    fn.argtypes = [_print_fn_t]
    fn(_print_cb)


def clear_warnings() -> None:
    """Start collecting this thread's libbpf warnings afresh (before a
    sequence of calls whose failure the caller decodes, such as a load)."""
    _thread_messages.recent.clear()


def warnings() -> List[str]:
    """libbpf warnings printed in this thread since its last :func:`clear_warnings`."""
    return list(_thread_messages.recent)


def last_warning() -> str:
    """The last of :func:`warnings`, or ``""``."""
    recent = _thread_messages.recent
    return recent[-1] if recent else ""


# --------------------------------------------------------------------------
# Raw syscalls for what the installed libbpf lacks (see ebpf/_syscall.py).

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def raw_syscall(nr: int, *args: Any) -> int:
    """``syscall(2)``; returns the result or raises the typed errno error."""
    ret = _syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        raise errno_error(ctypes.get_errno() or _errno.EINVAL, f"syscall {nr}")
    return int(ret)


def close_fd(fd: int) -> None:
    """close(2) that tolerates interpreter shutdown (os may be gone)."""
    try:
        os.close(fd)
    except Exception:
        pass


def string_at(addr: int, size: int) -> bytes:
    return ctypes.string_at(addr, size)


char_array = c_char


# --------------------------------------------------------------------------
# Python-level wrappers around C calls, grouped by the layer that uses them,
# so that no module above this one calls into the C library itself.

# -- loader (reading ELF, loading objects and programs) --
#
# The reader and the loader see libbpf's bpf_object through these wrappers
# only: each copies what it reads into Python values, and the object keeps
# every buffer it hands libbpf alive until it is closed.


# Plain slotted classes rather than NamedTuples: defining a NamedTuple costs
# more at import than all its instances at run time.


class MapDefinition:
    """What libbpf made of one map definition of an opened object.

    ``pinned``: LIBBPF_PIN_BY_NAME (libbpf gave it a pin path);
    ``internal``: a data section (.data, .rodata, .bss, .kconfig).
    """

    __slots__ = ("name", "type", "key_size", "value_size", "max_entries", "flags", "numa_node", "map_extra",
                 "pinned", "internal", "btf_key_type_id", "btf_value_type_id")

    def __init__(self, name: str, type: int, key_size: int, value_size: int, max_entries: int, flags: int,
                 numa_node: int, map_extra: int, pinned: bool, internal: bool, btf_key_type_id: int,
                 btf_value_type_id: int) -> None:
        self.name = name
        self.type = type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.numa_node = numa_node
        self.map_extra = map_extra
        self.pinned = pinned
        self.internal = internal
        self.btf_key_type_id = btf_key_type_id
        self.btf_value_type_id = btf_value_type_id


class ObjectMap:
    """A map of an open :class:`BPFObject` (valid until the object closes)."""

    __slots__ = ("_m", "_obj")

    def __init__(self, ptr: Any, obj: "BPFObject") -> None:
        self._m = ptr
        self._obj = obj

    def definition(self) -> MapDefinition:
        m = self._m
        return MapDefinition(
            lib.bpf_map__name(m).decode(),
            lib.bpf_map__type(m),
            lib.bpf_map__key_size(m),
            lib.bpf_map__value_size(m),
            lib.bpf_map__max_entries(m),
            lib.bpf_map__map_flags(m),
            lib.bpf_map__numa_node(m),
            lib.bpf_map__map_extra(m),
            bool(lib.bpf_map__pin_path(m)),
            bool(lib.bpf_map__is_internal(m)),
            lib.bpf_map__btf_key_type_id(m),
            lib.bpf_map__btf_value_type_id(m),
        )

    @property
    def name(self) -> str:
        name: bytes = lib.bpf_map__name(self._m)  # const char *
        return name.decode()

    def initial_size(self) -> int:
        """Size of a data section's initial image (0 for other maps)."""
        size = c_size_t(0)
        lib.bpf_map__initial_value(self._m, ctypes.byref(size))
        return size.value

    def initial_value(self) -> bytes:
        """A data section's initial image as libbpf holds it (b"" if none)."""
        size = c_size_t(0)
        ptr = lib.bpf_map__initial_value(self._m, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value) if ptr and size.value else b""

    def inner_map(self) -> Optional["ObjectMap"]:
        """The inner map template of a map-in-map definition."""
        inner = lib.bpf_map__inner_map(self._m)
        return ObjectMap(inner, self._obj) if inner else None

    # MapDefinition field -> libbpf's setter of it.
    SETTERS = {
        "type": "bpf_map__set_type",
        "key_size": "bpf_map__set_key_size",
        "value_size": "bpf_map__set_value_size",
        "max_entries": "bpf_map__set_max_entries",
        "flags": "bpf_map__set_map_flags",
        "numa_node": "bpf_map__set_numa_node",
        "map_extra": "bpf_map__set_map_extra",
    }

    def set(self, field: str, value: int) -> None:
        """Change one field of the definition (a key of :attr:`SETTERS`)."""
        getattr(lib, self.SETTERS[field])(self._m, value)

    def set_initial_value(self, image: bytes) -> None:
        buf = self._obj._keep_buffer(image)
        lib.bpf_map__set_initial_value(self._m, buf, len(image))

    def set_autocreate(self, create: bool) -> None:
        lib.bpf_map__set_autocreate(self._m, create)

    def set_inner_map_fd(self, fd: int) -> None:
        lib.bpf_map__set_inner_map_fd(self._m, fd)

    def reuse_fd(self, fd: int) -> None:
        lib.bpf_map__reuse_fd(self._m, fd)

    def set_pin_path(self, path: Optional[str]) -> None:
        lib.bpf_map__set_pin_path(self._m, path.encode() if path is not None else None)

    @property
    def fd(self) -> int:
        return int(lib.bpf_map__fd(self._m))


class ObjectProgram:
    """A program of an open :class:`BPFObject` (valid until the object closes)."""

    __slots__ = ("_p", "_obj", "_log")

    def __init__(self, ptr: Any, obj: "BPFObject") -> None:
        self._p = ptr
        self._obj = obj
        self._log: Any = None

    @property
    def name(self) -> str:
        name: bytes = lib.bpf_program__name(self._p)  # const char *
        return name.decode()

    @property
    def section_name(self) -> str:
        name: bytes = lib.bpf_program__section_name(self._p)  # const char *
        return name.decode()

    @property
    def type(self) -> int:
        return int(lib.bpf_program__type(self._p))

    @property
    def expected_attach_type(self) -> int:
        return int(lib.bpf_program__expected_attach_type(self._p))

    @property
    def flags(self) -> int:
        return int(lib.bpf_program__flags(self._p))

    def instructions(self) -> bytes:
        """libbpf's copy of the program's own code (8 bytes per instruction)."""
        count = int(lib.bpf_program__insn_cnt(self._p))
        return ctypes.string_at(lib.bpf_program__insns(self._p), count * 8) if count else b""

    def set_type(self, value: int) -> None:
        lib.bpf_program__set_type(self._p, value)

    def set_expected_attach_type(self, value: int) -> None:
        lib.bpf_program__set_expected_attach_type(self._p, value)

    def set_flags(self, value: int) -> None:
        lib.bpf_program__set_flags(self._p, value)

    def set_instructions(self, insns: bytes) -> None:
        buf = self._obj._keep_buffer(insns)
        lib.bpf_program__set_insns(self._p, buf, len(insns) // 8)

    def set_autoload(self, load: bool) -> None:
        lib.bpf_program__set_autoload(self._p, load)

    def set_attach_target(self, name: str, prog_fd: int = 0) -> None:
        """The kernel function ``name`` to attach to, or with ``prog_fd`` the
        function ``name`` of that BPF program (freplace, fentry/fexit)."""
        lib.bpf_program__set_attach_target(self._p, prog_fd, name.encode())

    def set_log(self, size: int, level: int = 0) -> None:
        """Give the verifier a log buffer of ``size`` bytes (and a level, if not 0)."""
        self._log = ctypes.create_string_buffer(size)
        lib.bpf_program__set_log_buf(self._p, self._log, size)
        if level:
            lib.bpf_program__set_log_level(self._p, level)

    def log(self) -> Tuple[str, bool]:
        """The verifier's log and whether it filled the buffer."""
        if self._log is None:
            return "", False
        raw = self._log.value
        return raw.decode(errors="replace"), len(raw) >= len(self._log) - 1

    @property
    def fd(self) -> int:
        return int(lib.bpf_program__fd(self._p))


class BPFObject:
    """An object opened by libbpf (``bpf_object__open_mem``): maps and
    programs to adjust before :meth:`load`; :meth:`close` frees it."""

    def __init__(self, ptr: Any, keep: List[Any]) -> None:
        self._obj = ptr
        self._keep = keep  # buffers libbpf points into until close

    def _keep_buffer(self, data: bytes) -> Any:
        buf = ctypes.create_string_buffer(data, len(data))
        self._keep.append(buf)
        return buf

    def btf_raw(self) -> Optional[bytes]:
        """The object's BTF as libbpf holds it after open (data sections
        sized, variables placed), or None without BTF."""
        handle = lib.bpf_object__btf(self._obj)
        if not handle:
            return None
        size = c_uint32()
        ptr = lib.btf__raw_data(handle, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value) if ptr else None

    def maps(self) -> List[ObjectMap]:
        """The object's maps (inner map templates are not among them)."""
        out, nxt = [], lib.bpf_object__next_map
        m = nxt(self._obj, None)
        while m:
            out.append(ObjectMap(m, self))
            m = nxt(self._obj, m)
        return out

    def programs(self) -> List[ObjectProgram]:
        out, nxt = [], lib.bpf_object__next_program
        p = nxt(self._obj, None)
        while p:
            out.append(ObjectProgram(p, self))
            p = nxt(self._obj, p)
        return out

    def load(self) -> int:
        """``bpf_object__load``: 0, or the errno of the failure (the caller
        decodes it with the programs' logs and :func:`warnings`)."""
        err = lib.bpf_object__load(self._obj)
        return -err if err < 0 else 0

    def close(self) -> None:
        if self._obj is not None:
            lib.bpf_object__close(self._obj)
            self._obj = None
            self._keep = []

    def __enter__(self) -> "BPFObject":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_object(data: bytes, name: str, btf_custom_path: Optional[str] = None) -> BPFObject:
    """Open an ELF object from memory: the one open sequence of the reader
    and the loader.  ``name`` prefixes libbpf's names of data-section maps;
    ``btf_custom_path`` is BTF to relocate CO-RE against instead of the
    kernel's.  Earlier libbpf warnings are forgotten, so that an error says
    only what this object caused.  The caller has validated ``data``.

    Raises :class:`~ebpf.errors.InvalidObjectError` when libbpf refuses the
    object and :class:`NotSupportedError` when this libbpf cannot open it.
    """
    from .errors import InvalidObjectError

    _load()
    opts = bpf_object_open_opts(
        object_name=name.encode(),
        btf_custom_path=btf_custom_path.encode() if btf_custom_path else None,
    )
    buf = ctypes.create_string_buffer(data, len(data))
    clear_warnings()
    try:
        obj = lib.bpf_object__open_mem(buf, len(data), ctypes.byref(opts))
    except NotSupportedError as exc:
        raise NotSupportedError(f"opening this object with libbpf {version_string()}", errno=exc.errno,
                                detail=str(exc)) from None
    except EBPFError as exc:
        raise InvalidObjectError(f"libbpf cannot open the object: {exc}", exc.errno) from None
    return BPFObject(obj, [buf])


class ProgLoad:
    """Outcome of :func:`prog_load`: an fd (-1 on failure), or the errno and
    the verifier's log; ``log_full``: the log filled its buffer."""

    __slots__ = ("fd", "errno", "log", "log_full")

    def __init__(self, fd: int, errno: int, log: str, log_full: bool) -> None:
        self.fd = fd
        self.errno = errno
        self.log = log
        self.log_full = log_full


def prog_load(
    prog_type: int,
    name: str,
    license: str,
    insns: bytes,
    *,
    expected_attach_type: int = 0,
    flags: int = 0,
    kern_version: int = 0,
    attach_btf_id: int = 0,
    attach_prog_fd: int = 0,
    btf_fd: int = -1,
    func_info: Optional[List[int]] = None,
    log_level: int = 0,
    log_size: int = 0,
) -> ProgLoad:
    """``bpf_prog_load``; never raises for the kernel's refusal.

    ``func_info`` is a flat list of (instruction offset, BTF type id) pairs
    of ``bpf_func_info`` records in ``btf_fd``'s BTF.  ``attach_prog_fd``
    (with ``attach_btf_id`` an id in that program's BTF) loads against
    another BPF program: freplace, fentry/fexit on a BPF function.
    """
    log_buf = ctypes.create_string_buffer(log_size) if log_level else None
    records = (c_uint32 * len(func_info))(*func_info) if func_info else None
    opts = bpf_prog_load_opts(
        prog_btf_fd=max(btf_fd, 0),
        func_info=ctypes.addressof(records) if records is not None else None,
        func_info_cnt=len(func_info) // 2 if func_info else 0,
        func_info_rec_size=8 if func_info else 0,
        expected_attach_type=expected_attach_type,
        prog_flags=flags,
        kern_version=kern_version,
        attach_btf_id=attach_btf_id,
        attach_prog_fd=attach_prog_fd,
        log_level=log_level,
        log_size=log_size if log_level else 0,
        log_buf=ctypes.addressof(log_buf) if log_buf is not None else None,
    )
    buf = ctypes.create_string_buffer(insns, len(insns))
    fd = lib.bpf_prog_load(prog_type, name.encode() or None, license.encode(), buf, len(insns) // 8,
                           ctypes.byref(opts))
    log = log_buf.value if log_buf is not None else b""
    full = log_buf is not None and len(log) >= log_size - 1
    if fd >= 0:
        return ProgLoad(int(fd), 0, log.decode(errors="replace"), full)
    return ProgLoad(-1, -int(fd), log.decode(errors="replace"), full)


def prog_fd_by_id(prog_id: int) -> int:
    """An fd of the program with kernel id ``prog_id``."""
    return int(lib.bpf_prog_get_fd_by_id(prog_id))


class TestRun:
    """Outcome of :func:`prog_test_run`: ``errno`` 0 on success;
    ``data_size_out`` is what the kernel wanted to write (on ENOSPC, more
    than ``data_out_size``)."""

    __slots__ = ("errno", "retval", "data", "ctx", "duration_ns", "data_size_out")

    def __init__(self, errno: int, retval: int, data: bytes, ctx: Optional[bytes], duration_ns: int,
                 data_size_out: int) -> None:
        self.errno = errno
        self.retval = retval
        self.data = data
        self.ctx = ctx
        self.duration_ns = duration_ns
        self.data_size_out = data_size_out


def prog_test_run(fd: int, data: bytes, ctx: Optional[bytes], data_out_size: int, repeat: int, flags: int,
                  cpu: int, ctx_in_place: bool) -> TestRun:
    """``BPF_PROG_TEST_RUN`` once; never raises for the kernel's refusal.

    ``ctx_in_place``: the kernel writes the context back into ``ctx_in``
    (syscall programs) and refuses a ``ctx_out``.
    """
    data_out = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    ctx_buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    ctx_out = ctypes.create_string_buffer(len(ctx)) if ctx and not ctx_in_place else None
    opts = bpf_test_run_opts(
        data_in=ctypes.cast(ctypes.c_char_p(data), c_void_p) if data else None,
        data_size_in=len(data),
        data_out=ctypes.addressof(data_out) if data_out is not None else None,
        data_size_out=data_out_size,
        ctx_in=ctypes.addressof(ctx_buf) if ctx_buf is not None else None,
        ctx_size_in=len(ctx) if ctx else 0,
        ctx_out=ctypes.addressof(ctx_out) if ctx_out is not None else None,
        ctx_size_out=len(ctx_out) if ctx_out is not None else 0,
        repeat=repeat,
        flags=flags,
        cpu=cpu,
    )
    try:
        lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
    except EBPFError as exc:
        return TestRun(exc.errno or 22, 0, b"", None, 0, int(opts.data_size_out))
    out = data_out.raw[: opts.data_size_out] if data_out is not None else b""
    if ctx_out is not None:
        ctx_back: Optional[bytes] = ctx_out.raw[: opts.ctx_size_out]
    else:
        ctx_back = ctx_buf.raw if ctx_buf is not None else None
    return TestRun(0, int(opts.retval), out, ctx_back, int(opts.duration), int(opts.data_size_out))


# -- maps and marshalling --


def map_elem_calls() -> Tuple[Any, Any, Any, Any, Any, Any]:
    """The element calls of ``Map``'s hot path as bound ctypes functions:
    ``(lookup, lookup_flags, update, delete, lookup_and_delete, next_key)``.

    Handed out rather than wrapped: a wrapper would add a Python call
    (about 10% of a lookup, ``bench/maps.py``) to every element operation.
    They are :func:`unchecked` (no argtypes, no errcheck): pass the fd as an
    int, keys and values as ``bytes`` or ctypes arrays (``None`` for NULL),
    64-bit flags as a :func:`u64`; each returns 0 or ``-errno``.
    """
    return (
        unchecked("bpf_map_lookup_elem"),
        unchecked("bpf_map_lookup_elem_flags"),
        unchecked("bpf_map_update_elem"),
        unchecked("bpf_map_delete_elem"),
        unchecked("bpf_map_lookup_and_delete_elem"),
        unchecked("bpf_map_get_next_key"),
    )


def map_create(map_type: int, name: bytes, key_size: int, value_size: int, max_entries: int, *,
               flags: int = 0, numa_node: int = 0, map_extra: int = 0, inner_map_fd: int = 0,
               btf_fd: int = 0, btf_key_type_id: int = 0, btf_value_type_id: int = 0) -> int:
    """``bpf_map_create``; the new fd, or the typed errno error.  ``btf_fd``
    and the type ids give the map its key and value types (BTF the kernel
    loaded, see :func:`btf_load`)."""
    opts = bpf_map_create_opts(map_flags=flags, numa_node=numa_node, map_extra=map_extra, inner_map_fd=inner_map_fd,
                               btf_fd=btf_fd, btf_key_type_id=btf_key_type_id, btf_value_type_id=btf_value_type_id)
    return int(lib.bpf_map_create(map_type, name or None, key_size, value_size, max_entries, ctypes.byref(opts)))


def map_freeze(fd: int) -> None:
    lib.bpf_map_freeze(fd)


def map_get_fd_by_id(map_id: int) -> int:
    return int(lib.bpf_map_get_fd_by_id(map_id))


def map_lookup_batch(fd: int, cursor: Optional[bytes], out_cursor: Any, keys: Any, values: Any, count: int,
                     delete: bool = False) -> Tuple[int, int]:
    """``bpf_map_lookup[_and_delete]_batch``: ``(0 or -errno, entries read)``.
    ``cursor`` is None for the first batch; ``out_cursor``, ``keys`` and
    ``values`` are writable buffers of the caller."""
    n = c_uint32(count)
    opts = bpf_map_batch_opts()
    fn = lib.bpf_map_lookup_and_delete_batch if delete else lib.bpf_map_lookup_batch
    ret = fn(fd, cursor, out_cursor, keys, values, ctypes.byref(n), ctypes.byref(opts))
    return ret, n.value


def map_update_batch(fd: int, keys: bytes, values: bytes, count: int, elem_flags: int = 0) -> Tuple[int, int]:
    """``bpf_map_update_batch``: ``(0 or -errno, entries written)``."""
    n = c_uint32(count)
    opts = bpf_map_batch_opts(elem_flags=elem_flags)
    ret = lib.bpf_map_update_batch(fd, keys, values, ctypes.byref(n), ctypes.byref(opts))
    return ret, n.value


def map_delete_batch(fd: int, keys: bytes, count: int) -> Tuple[int, int]:
    """``bpf_map_delete_batch``: ``(0 or -errno, entries deleted)``."""
    n = c_uint32(count)
    opts = bpf_map_batch_opts()
    ret = lib.bpf_map_delete_batch(fd, keys, ctypes.byref(n), ctypes.byref(opts))
    return ret, n.value


def obj_pin(fd: int, path: str) -> None:
    lib.bpf_obj_pin(fd, os.fsencode(path))


def obj_get(path: str, read_only: bool = False) -> int:
    """Open the object pinned at ``path`` (read-only where libbpf can say so)."""
    if read_only and has("bpf_obj_get_opts"):
        opts = bpf_obj_get_opts(file_flags=1 << 3)  # BPF_F_RDONLY
        return int(lib.bpf_obj_get_opts(os.fsencode(path), opts))
    return int(lib.bpf_obj_get(os.fsencode(path)))


# ring_buffer__* for the readers' libbpf backend (ebpf/ringbuf.py).
_ring_sample_t = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


def ring_buffer_new(fd: int, on_sample: Callable[[Any, int, int], int]) -> Tuple[Any, Any]:
    """A libbpf ring buffer consumer of map ``fd``: ``(handle, callback)``.
    ``on_sample(ctx, address, size)`` runs per record (its bytes are
    :func:`string_at` ``(address, size)``) and must not raise; a negative
    return stops the consume call after that record.  Keep the callback
    alive as long as the handle."""
    cb = _ring_sample_t(on_sample)
    return lib.ring_buffer__new(fd, ctypes.cast(cb, c_void_p), None, None), cb


def ring_buffer_consume(rb: Any) -> int:
    return int(lib.ring_buffer__consume(rb))


def ring_buffer_free(rb: Any) -> None:
    lib.ring_buffer__free(rb)


# -- links, info, features --
#
# Each takes and returns plain Python values.  Those that release something
# (detach, unregister) bind ``lib`` as a default argument: handles call them
# from finalizers, which may run at interpreter shutdown.

_BPF_F_REPLACE = 1 << 2


def obj_get_info(fd: int, info: Any) -> Any:
    """``BPF_OBJ_GET_INFO_BY_FD`` into ``info``, a kernel ``bpf_*_info``
    struct (fields set beforehand are the kernel's in/out buffers)."""
    size = c_uint32(ctypes.sizeof(info))
    lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    return info


def link_create(prog_fd: int, target_fd: int, attach_type: int, *, flags: int = 0, cookie: int = 0,
                target_btf_id: int = 0, iter_info: Any = None) -> int:
    """``bpf_link_create``: the new link's fd.  ``iter_info`` is a
    ``union bpf_iter_link_info`` (``ebpf._syscall``) for iterators."""
    opts = bpf_link_create_opts(flags=flags, target_btf_id=target_btf_id)
    if cookie:
        opts.set_cookie(cookie)
    if iter_info is not None:
        opts.iter_info = ctypes.addressof(iter_info)
        opts.iter_info_len = ctypes.sizeof(iter_info)
    return int(lib.bpf_link_create(prog_fd, target_fd, attach_type, ctypes.byref(opts)))


def kprobe_multi_link_create(prog_fd: int, attach_type: int, *, symbols: Optional[Sequence[bytes]] = None,
                             addresses: Optional[Sequence[int]] = None, cookies: Optional[Sequence[int]] = None,
                             flags: int = 0) -> int:
    """``bpf_link_create`` of a kprobe.multi link on ``symbols`` (names) or
    ``addresses``, one optional cookie each."""
    opts = bpf_link_create_opts()
    opts.kprobe_multi_flags = flags
    keep: List[Any] = []
    if symbols is not None:
        syms = (c_char_p * len(symbols))(*symbols)
        keep.append(syms)
        opts.kprobe_multi_cnt = len(symbols)
        opts.kprobe_multi_syms = ctypes.addressof(syms)
    elif addresses is not None:
        addrs = (ctypes.c_ulong * len(addresses))(*addresses)
        keep.append(addrs)
        opts.kprobe_multi_cnt = len(addresses)
        opts.kprobe_multi_addrs = ctypes.addressof(addrs)
    if cookies is not None:
        arr = (c_uint64 * len(cookies))(*cookies)
        keep.append(arr)
        opts.kprobe_multi_cookies = ctypes.addressof(arr)
    fd = int(lib.bpf_link_create(prog_fd, 0, attach_type, ctypes.byref(opts)))
    del keep  # the arrays had to outlive the call
    return fd


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: Optional[int] = None) -> None:
    """``BPF_LINK_UPDATE``; with ``old_prog_fd`` only if that program is attached."""
    opts = bpf_link_update_opts()
    if old_prog_fd is not None:
        opts.flags = _BPF_F_REPLACE
        opts.old_prog_fd = old_prog_fd
    lib.bpf_link_update(link_fd, new_prog_fd, ctypes.byref(opts))


def link_detach(link_fd: int) -> None:
    lib.bpf_link_detach(link_fd)


def link_get_fd_by_id(link_id: int) -> int:
    return int(lib.bpf_link_get_fd_by_id(link_id))


def prog_get_fd_by_id(prog_id: int) -> int:
    return int(lib.bpf_prog_get_fd_by_id(prog_id))


def btf_get_fd_by_id(btf_id: int) -> int:
    return int(lib.bpf_btf_get_fd_by_id(btf_id))


def iter_create(link_fd: int) -> int:
    """``BPF_ITER_CREATE``: an fd that reads one walk of the iterator."""
    return int(lib.bpf_iter_create(link_fd))


def raw_tracepoint_open(name: Optional[bytes], prog_fd: int) -> int:
    """``BPF_RAW_TRACEPOINT_OPEN``; ``None`` attaches a tracing program to the
    target it was loaded for."""
    return int(lib.bpf_raw_tracepoint_open(name, prog_fd))


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0, replace_prog_fd: int = 0) -> None:
    """Legacy ``BPF_PROG_ATTACH`` (cgroups)."""
    opts = bpf_prog_attach_opts(flags=flags, replace_prog_fd=replace_prog_fd)
    lib.bpf_prog_attach_opts(prog_fd, target_fd, attach_type, ctypes.byref(opts))


def prog_detach(prog_fd: int, target_fd: int, attach_type: int, _lib: Any = lib) -> None:
    """``BPF_PROG_DETACH`` of one program (finalizer-safe)."""
    _lib.bpf_prog_detach2(prog_fd, target_fd, attach_type)


def prog_query(target_fd: int, attach_type: int, max_ids: int = 64) -> List[int]:
    """Ids of the programs attached at ``attach_type`` of ``target_fd``."""
    ids = (c_uint32 * max_ids)()
    cnt = c_uint32(max_ids)
    flags = c_uint32()
    lib.bpf_prog_query(target_fd, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(cnt))
    return list(ids[: min(cnt.value, max_ids)])


def tc_hook_create(ifindex: int, attach_point: int) -> None:
    """The ``clsact`` qdisc of an interface (EEXIST when it has one)."""
    lib.bpf_tc_hook_create(ctypes.byref(bpf_tc_hook(ifindex=ifindex, attach_point=attach_point)))


def tc_hook_destroy(ifindex: int, attach_point: int) -> None:
    lib.bpf_tc_hook_destroy(ctypes.byref(bpf_tc_hook(ifindex=ifindex, attach_point=attach_point)))


def tc_attach(ifindex: int, attach_point: int, prog_fd: int, handle: int, priority: int,
              flags: int = 0) -> Tuple[int, int, int]:
    """A direct-action cls_bpf filter: its (handle, priority, program id)."""
    hook = bpf_tc_hook(ifindex=ifindex, attach_point=attach_point)
    opts = bpf_tc_opts(prog_fd=prog_fd, handle=handle, priority=priority, flags=flags)
    lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
    return int(opts.handle), int(opts.priority), int(opts.prog_id)


def tc_detach(ifindex: int, attach_point: int, handle: int, priority: int, _lib: Any = lib,
              _hook: Any = bpf_tc_hook, _opts: Any = bpf_tc_opts) -> None:
    """Delete one tc filter (finalizer-safe)."""
    _lib.bpf_tc_detach(_hook(ifindex=ifindex, attach_point=attach_point), _opts(handle=handle, priority=priority))


def tc_query(ifindex: int, attach_point: int, handle: int, priority: int) -> int:
    """The id of the program in one tc filter."""
    hook = bpf_tc_hook(ifindex=ifindex, attach_point=attach_point)
    opts = bpf_tc_opts(handle=handle, priority=priority)
    lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
    return int(opts.prog_id)


_KEY0 = bytes(4)


def struct_ops_register(map_fd: int, value: bytes) -> int:
    """Write a struct_ops map's value (key 0): 0 or -errno."""
    return int(lib.bpf_map_update_elem(map_fd, _KEY0, value, 0))


def struct_ops_unregister(map_fd: int, _lib: Any = lib, _key: bytes = _KEY0) -> int:
    """Delete a struct_ops map's value: 0 or -errno (finalizer-safe)."""
    return int(_lib.bpf_map_delete_elem(map_fd, _key))


BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


def enable_stats(kind: int = BPF_STATS_RUN_TIME) -> int:
    """``BPF_ENABLE_STATS``: an fd that keeps the kernel collecting program
    statistics of ``kind`` until it is closed (the caller owns it)."""
    return int(lib.bpf_enable_stats(kind))


def probe_prog_type(prog_type: int) -> int:
    """libbpf's probe: 1 if the type loads, 0 if not, -errno."""
    return int(lib.libbpf_probe_bpf_prog_type(prog_type, None))


def probe_map_type(map_type: int) -> int:
    """libbpf's probe: 1 if the type can be created, 0 if not, -errno."""
    return int(lib.libbpf_probe_bpf_map_type(map_type, None))


def find_vmlinux_btf_id(name: str, attach_type: int) -> int:
    """The id of ``name`` in the kernel's BTF as ``attach_type`` names it
    (``bpf_iter_`` prefix for iterators, and so on)."""
    return int(lib.libbpf_find_vmlinux_btf_id(name.encode(), attach_type))


def prog_load_probe(prog_type: int, insns: bytes, *, expected_attach_type: int = 0, attach_btf_id: int = 0,
                    log_size: int = 4096) -> Tuple[int, str]:
    """Load ``insns`` as a GPL program, verifier log on: (fd or -errno, log).

    ``log_size=0`` loads without a log (a long program's log may not fit,
    which fails the load with ENOSPC)."""
    log_buf = ctypes.create_string_buffer(max(log_size, 1))
    opts = bpf_prog_load_opts(expected_attach_type=expected_attach_type, attach_btf_id=attach_btf_id,
                              log_level=1 if log_size else 0, log_size=log_size,
                              log_buf=ctypes.addressof(log_buf) if log_size else None)
    fd = int(lib.bpf_prog_load(prog_type, None, b"GPL", insns, len(insns) // 8, ctypes.byref(opts)))
    return fd, log_buf.value.decode(errors="replace")


def map_create_probe(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
                     name: Optional[bytes] = None) -> int:
    """``bpf_map_create`` for a feature probe: the fd (the caller closes it)."""
    opts = bpf_map_create_opts(map_flags=flags)
    return int(lib.bpf_map_create(map_type, name, key_size, value_size, max_entries, ctypes.byref(opts)))


def batch_lookup_probe(map_fd: int) -> int:
    """One ``BPF_MAP_LOOKUP_BATCH`` of one 4-byte entry: 0 or -errno."""
    keys = ctypes.create_string_buffer(4)
    values = ctypes.create_string_buffer(4)
    out = ctypes.create_string_buffer(8)
    count = c_uint32(1)
    opts = bpf_map_batch_opts()
    return int(lib.bpf_map_lookup_batch(map_fd, None, out, keys, values, ctypes.byref(count), ctypes.byref(opts)))


# -- btf (dumping, validation) --

# libbpf's C dumper calls printf_fn(ctx, fmt, va_list) for each fragment:
# vfprintf's own shape, so with a FILE* as ctx the text goes straight into a
# C stream, with no Python call per fragment (the kernel's BTF makes ~10^6).
_fdopen = _libc.fdopen
_fdopen.argtypes = [c_int, c_char_p]
_fdopen.restype = c_void_p
_fputs = _libc.fputs
_fputs.argtypes = [c_char_p, c_void_p]
_fputs.restype = c_int
_fclose = _libc.fclose
_fclose.argtypes = [c_void_p]
_fclose.restype = c_int
_VFPRINTF = ctypes.cast(_libc.vfprintf, c_void_p)

_BTF_MAGIC = 0xEB9F
_BTF_HEADER = struct.Struct("=HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len
_KIND_STRUCT = 4
_MAX_VLEN = 0xFFFF


def _open_btf(path: Optional[str], data: Optional[bytes], base: Any) -> Any:
    """A libbpf ``struct btf *`` from a file (raw BTF or ELF) or raw bytes
    (libbpf copies them), split over ``base`` (a ``struct btf *``) when
    given (libbpf 1.1 splits only files)."""
    if data is not None:
        if base:
            raise ValueError("split BTF is read from a file (base_path with path)")
        return lib.btf__new(bytes(data), len(data))
    assert path is not None
    if base:
        return lib.btf__parse_split(os.fsencode(path), base)
    return lib.btf__parse(os.fsencode(path), None)


def _with_root_structs(data: Any) -> Optional[Tuple[bytearray, int]]:
    """``data`` (native-endian raw BTF) with anonymous structs appended, each
    with room for up to 65535 members of type void; and their number.

    Dumping every type the way bpftool does is one btf_dump__dump_type()
    per id, in id order: ~130,000 calls through ctypes for the kernel's
    BTF, which cost more than the dumping itself.  A call on an anonymous
    struct orders each member's type exactly as a call on that type would
    (btf_dump_order_type), in member order, emits nothing for the struct
    itself, and the queue it emits is the concatenation of what the
    separate calls would have emitted.  So once the dumper exists, the
    members are pointed at ids 1..n (:func:`_point_roots`) and one call per
    struct does the work of 65535.  They must be void until then: the dumper
    marks every type some other type refers to when it is created, and
    anonymous enums that nothing refers to are emitted only as roots.
    """
    view = memoryview(data)
    if len(view) < _BTF_HEADER.size:
        return None
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack_from(view)
    if magic != _BTF_MAGIC or hdr_len < _BTF_HEADER.size:
        return None
    t0, s0 = hdr_len + type_off, hdr_len + str_off
    if t0 + type_len > s0 or s0 + str_len > len(view):
        return None
    # Every record is at least 12 bytes: room for type_len // 12 roots.
    capacity = max(1, type_len // 12)
    chunks = -(-capacity // _MAX_VLEN)
    extra = 12 * (chunks + capacity)
    out = bytearray(hdr_len + type_len + extra + str_len)  # zeroed: void members
    out[:hdr_len] = view[:hdr_len]
    _BTF_HEADER.pack_into(out, 0, magic, version, flags, hdr_len, 0, type_len + extra, type_len + extra, str_len)
    out[hdr_len:hdr_len + type_len] = view[t0:t0 + type_len]
    pos, left = hdr_len + type_len, capacity
    for _ in range(chunks):
        vlen = min(left, _MAX_VLEN)
        struct.pack_into("=I", out, pos + 4, (_KIND_STRUCT << 24) | vlen)
        pos += 12 * (1 + vlen)
        left -= vlen
    out[pos:] = view[s0:s0 + str_len]
    return out, chunks


def _point_roots(btf_: Any, chunks: int) -> List[int]:
    """Point the members of the structs appended by :func:`_with_root_structs`
    at ids 1..n, in order; returns the ids of the structs that got any."""
    import array

    count = int(lib.btf__type_cnt(btf_))
    first = count - chunks  # the first appended struct; 1..first-1 are the real types
    members = array.array("I", bytes(12 * (first - 1)))
    members[1::3] = array.array("I", range(1, first))
    address = members.buffer_info()[0]
    used = []
    done = 0
    for i in range(chunks):
        n = min(first - 1 - done, _MAX_VLEN)
        if n <= 0:
            break
        record = lib.btf__type_by_id(btf_, first + i)
        name_off, info = struct.unpack("=II", ctypes.string_at(record, 8))
        if name_off or info >> 24 != _KIND_STRUCT or n > info & 0xFFFF:
            raise EBPFError(f"btf_dump: type {first + i} is not the root struct appended for the dump")
        ctypes.memmove(record + 12, address + 12 * done, 12 * n)
        done += n
        used.append(first + i)
    return used


def dump_btf_c(out_fd: int, *, path: Optional[str] = None, data: Optional[bytes] = None,
               base_path: Optional[str] = None, type_ids: Optional[List[int]] = None,
               header: str = "", footer: str = "") -> None:
    """Write BTF as C declarations to ``out_fd`` with libbpf's dumper.

    The BTF comes from ``path`` (raw BTF or an ELF object) or ``data``; a
    split blob (a kernel module's) needs ``base_path``.  ``type_ids`` are the
    roots to dump (with what they depend on); by default every type, in id
    order, as ``bpftool btf dump ... format c`` does.  ``header`` and
    ``footer`` go into the same stream around the declarations.
    """
    base = _open_btf(base_path, None, None) if base_path else None
    btf_ = dump = stream = None
    try:
        chunks = 0
        if type_ids is None and base is None:
            raw: Any = data
            if raw is None and path is not None:
                with open(path, "rb") as f:
                    raw = f.read()
                if int.from_bytes(raw[:2], sys.byteorder) != _BTF_MAGIC:
                    raw = None  # an ELF object (or foreign-endian): libbpf reads it
            widened = _with_root_structs(raw) if raw is not None else None
            if widened is not None:
                buf, chunks = widened
                btf_ = lib.btf__new((c_char * len(buf)).from_buffer(buf), len(buf))
        if btf_ is None:
            btf_ = _open_btf(path if data is None else None, data, base)
        fd = os.dup(out_fd)
        stream = _fdopen(fd, b"w")
        if not stream:
            err = ctypes.get_errno()
            os.close(fd)
            raise errno_error(err, "fdopen")
        dump = lib.btf_dump__new(btf_, _VFPRINTF, stream, None)
        if chunks:
            ids: Any = _point_roots(btf_, chunks)
        elif type_ids is not None:
            ids = type_ids
        else:
            first = int(lib.btf__type_cnt(base)) if base else 1
            ids = range(first, int(lib.btf__type_cnt(btf_)))
        if header:
            _fputs(header.encode(), stream)
        dump_type = lib.btf_dump__dump_type
        for tid in ids:
            dump_type(dump, tid)
        if footer:
            _fputs(footer.encode(), stream)
    finally:
        if dump:
            lib.btf_dump__free(dump)
        if stream:
            if _fclose(stream) != 0:
                err = ctypes.get_errno()
                if err != 32:  # EPIPE: the reader went away (`| head`)
                    raise errno_error(err, "writing the C declarations")
        if btf_:
            lib.btf__free(btf_)
        if base:
            lib.btf__free(base)


class bpf_btf_load_opts(_Opts):
    _fields_ = [("sz", c_size_t), ("log_buf", c_void_p), ("log_level", c_uint32), ("log_size", c_uint32)]


BTF_LOG_SIZE = 64 * 1024
BTF_LOG_SIZE_MAX = 16 * 1024 * 1024
_ENOSPC = 28


def btf_load(data: bytes, log_size: Optional[int] = None) -> int:
    """``BPF_BTF_LOAD``: the new BTF object's fd.

    The first attempt carries no log; libbpf retries a failure with one
    (log level 1), and a log that does not fit is retried with a larger
    buffer, up to 16 MiB.  A refusal with a log is a :class:`VerifierError`
    carrying it; other failures are the errno's typed error.
    """
    buf = ctypes.create_string_buffer(bytes(data), len(data))
    size = max(int(log_size or BTF_LOG_SIZE), 1024)
    while True:
        log = ctypes.create_string_buffer(size)
        opts = bpf_btf_load_opts(log_buf=ctypes.cast(log, c_void_p), log_level=0, log_size=size)
        clear_warnings()
        try:
            return int(lib.bpf_btf_load(buf, len(data), ctypes.byref(opts)))
        except EBPFError as exc:
            err = exc.errno or 0
            text = log.value.decode(errors="replace")
            if err == _ENOSPC and size < BTF_LOG_SIZE_MAX:
                size = min(size * 8, BTF_LOG_SIZE_MAX)
                continue
            lines = text.rstrip("\n").splitlines()
            if not lines or isinstance(exc, PermissionDeniedError):
                raise
            last = next((ln for ln in reversed(lines) if ln.strip()), "")
            raise VerifierError(f"the kernel refused the BTF: {last} ({strerror(err)})", lines,
                                truncated=err == _ENOSPC, errno=err) from None


# -- command line --


_NEXT_ID = {
    "prog": "bpf_prog_get_next_id",
    "map": "bpf_map_get_next_id",
    "link": "bpf_link_get_next_id",
    "btf": "bpf_btf_get_next_id",
}


def next_id(kind: str, start: int) -> int:
    """The smallest id of a ``kind`` ("prog", "map", "link", "btf") object
    above ``start``, or 0 when there is none (BPF_*_GET_NEXT_ID)."""
    out = c_uint32()
    err = int(getattr(lib, _NEXT_ID[kind])(start, ctypes.byref(out)))
    if err == -2:  # ENOENT: past the last id
        return 0
    if err < 0:
        raise errno_error(-err, f"BPF_{kind.upper()}_GET_NEXT_ID")
    return int(out.value)


class bpf_btf_info(Structure):
    _fields_ = [
        ("btf", c_uint64),
        ("btf_size", c_uint32),
        ("id", c_uint32),
        ("name", c_uint64),
        ("name_len", c_uint32),
        ("kernel_btf", c_uint32),
    ]


def btf_object_info(fd: int, with_data: bool = False) -> Tuple[int, str, bool, int, bytes]:
    """(id, name, kernel_btf, size, raw BTF or b"") of the BTF object behind ``fd``.

    Two BPF_OBJ_GET_INFO_BY_FD calls: the first learns the sizes, the second
    hands the kernel buffers of exactly those sizes.
    """
    info = bpf_btf_info()
    size = c_uint32(ctypes.sizeof(info))
    lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    name_buf = ctypes.create_string_buffer(max(1, info.name_len + 1))
    data_buf = ctypes.create_string_buffer(max(1, info.btf_size) if with_data else 1)
    again = bpf_btf_info(name=ctypes.addressof(name_buf), name_len=len(name_buf))
    if with_data:
        again.btf = ctypes.addressof(data_buf)
        again.btf_size = info.btf_size
    size = c_uint32(ctypes.sizeof(again))
    lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(again), ctypes.byref(size))
    data = data_buf.raw[:min(again.btf_size, info.btf_size)] if with_data else b""
    return (int(again.id), name_buf.value.decode(errors="replace"), bool(again.kernel_btf),
            int(again.btf_size), data)

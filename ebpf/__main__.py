"""``python -m ebpf``: see :mod:`ebpf.cli`."""

from ebpf.cli import main

raise SystemExit(main())

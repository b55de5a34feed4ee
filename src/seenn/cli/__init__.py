"""The ``seenn`` command line, a thin layer over the library: ``parser`` (every command and flag), one
module per group of commands (``train``, ``evaluate``, ``analysis``, ``interop``, ``misc``) and ``common``
(argument types, output, opening a run). Every user mistake (missing or corrupt file, impossible argument)
ends with one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys

from ..errors import SeennError
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv=None) -> int:
    rc = _main(argv)
    from ..runtime.distributed import left_group

    if left_group() and argv is None:  # a torchrun worker: end without the interpreter's teardown (see left_group)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    try:
        from ..io.alloc import tune_allocator

        tune_allocator()  # freed tensor memory kept for reuse: no paging in on every large tensor (see seenn.io.alloc)
        args = build_parser().parse_args(argv)
        if getattr(args, "device", None) is not None:
            from ..io.schema import check_device

            args.device = check_device(args.device)
        return args.func(args)
    except SeennError as e:
        print(f"seenn: error: {e.for_cli()}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, a file where a folder should be, a full disk)
        where = f": {e.filename}" if e.filename else ""
        print(f"seenn: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seenn: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("seenn: error: an input is nested too deeply", file=sys.stderr)
        return 2
    except Exception as e:  # PyTorch and NumPy refusing an input, a peer network's own code failing: one line
        if os.environ.get("SEENN_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"seenn: error: {type(e).__name__}: {first[:300]} (SEENN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2

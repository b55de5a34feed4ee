"""The ``seenn`` command line, a thin layer over the library: ``parser`` (every command and flag) with ``args``
(argument types and their bounds), one module per group of commands (``train``, ``evaluate``, ``analysis``,
``interop``, ``misc``) and ``common`` (output, opening a run). The parser names each command's function as
``"module:function"`` and only the chosen command's module is imported, so ``seenn --help`` does not load PyTorch
and the command modules import the library at their tops. Every user mistake (missing or corrupt file, impossible
argument) ends with one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import os
import sys

from ..errors import SeennError
from ..io.alloc import tune_allocator
from ..io.schema import check_device
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv=None) -> int:
    rc = _main(argv)
    # a torchrun worker ends without the interpreter's teardown (see left_group); only a command that can join a
    # process group imports seenn.runtime.distributed
    distributed = sys.modules.get("seenn.runtime.distributed")
    if distributed is not None and distributed.left_group() and argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _main(argv=None) -> int:
    try:
        tune_allocator()  # freed tensor memory kept for reuse: no paging in on every large tensor (see seenn.io.alloc)
        args = build_parser().parse_args(argv)
        if getattr(args, "device", None) is not None:
            args.device = check_device(args.device)
        return command(args.func)(args)
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


def command(name: str):
    """The function a parser entry names as ``"module:function"`` (a module of this package), imported now."""
    module, function = name.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)

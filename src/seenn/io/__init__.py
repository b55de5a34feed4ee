"""The bottom layer above ``errors``: what seenn reads and writes, checked before anything is allocated.

- :mod:`~seenn.io.files`: atomic writes, seenn's JSON files, output folders (``--out`` refused when non-empty
  without ``--overwrite``, never an input; staged folders moved into place whole).
- :mod:`~seenn.io.schema`: the one typed schema for ``config.json``, ``policy.json`` and NIR metadata, and
  ``LIMITS``, the bound on every size a user can type or a file can claim.
- :mod:`~seenn.io.alloc`: the allocator setting the ``seenn`` command starts with.
"""

from __future__ import annotations

from .files import atomic_write_bytes, check_out_dir, read_json, staged_dir, write_json
from .schema import LIMITS, bounded, check_config

__all__ = ["LIMITS", "atomic_write_bytes", "bounded", "check_config", "check_out_dir", "read_json", "staged_dir",
           "write_json"]

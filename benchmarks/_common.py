"""Shared helpers for the benchmark scripts: machine description and section-wise updates of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT / "src"))


def allocator(choice: str) -> str:
    """Apply ``--allocator`` (``tuned``: what the seenn command does at start, see seenn.io.alloc; ``default``: glibc
    as it comes) and describe it for the published text."""
    if choice == "tuned":
        from seenn.io.alloc import tune_allocator

        return "allocator tuned as the seenn command does (seenn.io.alloc)" if tune_allocator() else \
            "allocator as it comes (tuning unavailable here)"
    return "glibc allocator as it comes (--allocator default)"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


def today() -> str:
    return datetime.date.today().isoformat()


def update_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nMeasured numbers only, each with the command that produced it.\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def publish(name: str, body) -> None:
    """Write ``body`` (a string, or lines) as the section ``name`` of docs/benchmarks.md and print it."""
    text = body if isinstance(body, str) else "\n".join(body)
    update_section(name, text)
    print(text)


def stored_rule(cfg: dict):
    """The run's stored (calibrated) confidence rule; None when the run carries none."""
    stored = cfg.get("exit", {}).get("confidence")
    if not stored:
        return None
    from seenn.exits import Confidence

    return Confidence(stored.get("thresholds") or stored["threshold"], temperature=stored.get("temperature", 1.0))


def calibrated_result(ev, cfg: dict):
    """The run's stored (calibrated) confidence rule run for real on ``ev`` (an Evaluation), summarised; None when
    the run carries none."""
    rule = stored_rule(cfg)
    return None if rule is None else ev.summarize(rule.describe(), ev.run(rule))

"""What every benchmark prints: the machine it ran on, percentiles, and a markdown table for the README."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 100 samples is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def postfix_version() -> str:
    try:
        result = subprocess.run(
            ["postconf", "-dh", "mail_version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "not installed"
    return result.stdout.strip() or "unknown"


def machine_description(argv: Sequence[str]) -> list[str]:
    """Markdown bullet lines: CPU, cores, OS, Python and library versions, and the exact command."""
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPU(s) (`nproc`), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name}); "
        f"aiosmtpd {package_version('aiosmtpd')}, aiosmtplib {package_version('aiosmtplib')}; "
        f"Postfix {postfix_version()}",
        f"- Command: `{shlex.join(['python', *argv])}`",
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub markdown table; first column left-aligned, the rest right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines

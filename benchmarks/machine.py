"""What a benchmark ran on: the CPU model and the vector instructions that decide int8 speed.

The same code measures very differently across CPUs: ONNX Runtime's int8 kernels are much faster with VNNI
(AVX-512 VNNI or AVX-VNNI) than with AVX2 alone, so every speed figure is printed with this line.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_summary(cpuinfo: str | None = None) -> dict[str, object]:
    """CPU model, core count and which of `VECTOR_FLAGS` it has (Linux `/proc/cpuinfo`; else the platform)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {"model": model, "cpus": os.cpu_count(), "vector": [f for f in VECTOR_FLAGS if f in flags]}


def cpu_line(summary: dict[str, object] | None = None) -> str:
    """One line for a benchmark's header, e.g. `AMD EPYC, 2 CPUs, avx2 (no VNNI: int8 is slow)`."""
    info = summary or cpu_summary()
    vector = list(info["vector"])  # type: ignore[call-overload]
    vnni = any("vnni" in f for f in vector)
    listed = ", ".join(vector) or "no AVX2"
    return f"{info['model']}, {info['cpus']} CPUs, {listed}" + ("" if vnni else " (no VNNI: int8 is slow)")

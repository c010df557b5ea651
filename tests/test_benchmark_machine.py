"""The CPU line printed beside every speed figure."""

from __future__ import annotations

from benchmarks.machine import cpu_line, cpu_summary

CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni
processor\t: 1
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni
"""


def test_cpu_summary_reads_model_and_vector_flags() -> None:
    info = cpu_summary(CPUINFO)
    assert info["model"] == "Example CPU 9000"
    assert info["vector"] == ["avx2", "avx512f", "avx512_vnni"]
    assert "no VNNI" not in cpu_line(info)


def test_a_cpu_without_vnni_is_called_out() -> None:
    info = cpu_summary(CPUINFO.replace(" avx512f avx512_vnni", ""))
    assert info["vector"] == ["avx2"]
    assert cpu_line(info).endswith("avx2 (no VNNI: int8 is slow)")
    assert "no AVX2" in cpu_line(cpu_summary("model name : Old\nflags : fpu sse2\n"))

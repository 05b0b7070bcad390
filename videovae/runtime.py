"""Process-wide settings: devices and dtypes, logging, CPU speed and memory settings."""

from __future__ import annotations

import logging

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def setup_cpu() -> None:
    """Settings every CPU run needs: without flushing denormals, steps get ~10x slower; with
    glibc's adaptive mmap threshold, freed activation buffers stay in the heap and the peak
    RSS of a long streamed run creeps up, so allocations >= 1 MiB always go to mmap."""
    torch.set_flush_denormal(True)
    libc = _libc()
    if libc:
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (also turns off the adaptive threshold)


_LIBC = None


def _libc():
    """glibc through ctypes, or False elsewhere."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc), once per streamed chunk."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but CUDA is not available")
    return dev


def pick_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for activations on `device` (CUDA: free device memory plus what torch's cache
    holds unused; CPU: MemAvailable), or None when unknown."""
    try:
        if device.type == "cuda":
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(torch.cuda.mem_get_info(device)[0] + cached)
        if device.type == "cpu":
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        pass
    return None

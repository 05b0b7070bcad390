"""Process-wide settings: devices and dtypes, logging, CPU speed and memory settings, and how a
command stops on SIGINT / SIGTERM (`stop_on_signals`).

Importing this module does not import torch: the command line uses it before any model loads.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import threading
from typing import Callable

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # option -> torch dtype


def setup_cpu() -> None:
    """Settings every CPU run needs: without flushing denormals, steps get ~10x slower; with
    glibc's adaptive mmap threshold, freed activation buffers stay in the heap and the peak
    RSS of a long streamed run creeps up, so allocations >= 1 MiB always go to mmap."""
    import torch

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


def pick_device(name: str | None = None):
    """A torch.device: "auto" (or None) is CUDA when available, else the CPU."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but CUDA is not available")
    return dev


def pick_dtype(name: str):
    """The torch dtype of a --dtype option (fp32, bf16, fp16)."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, DTYPES[name])


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def available_memory(device) -> int | None:
    """Bytes free for activations on `device` (CUDA: free device memory plus what torch's cache
    holds unused; CPU: MemAvailable), or None when unknown."""
    import torch

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


# ----------------------------------------------------------------------------------------------
# Stopping on SIGINT / SIGTERM

STOP_GRACE_S = 3.0  # how long a stopping command may take to unwind before it is cut short
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temporary outputs are removed on the way out."""


def stop_exception(signum: int) -> KeyboardInterrupt:
    """What a stop signal raises: `Terminated` for SIGTERM, KeyboardInterrupt for SIGINT."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_exit_code(signum: int) -> int:
    """128 + the signal number, as a shell reports a process its signal ended: 130, 143."""
    return 128 + int(signum)


def stop_message(signum: int) -> str:
    return "videovae: terminated" if signum == signal.SIGTERM else "videovae: interrupted"


_requested: int | None = None  # the first stop signal of the running `stop_on_signals` block
_watching = False  # a `stop_on_signals` block has set the wakeup fd
_hooks: dict[int, Callable[[], None]] = {}
_hooks_lock = threading.Lock()
_hook_ids = itertools.count()


def stop_requested() -> int | None:
    """The signal that asked the running command to stop, or None."""
    return _requested


def check_stop() -> None:
    """Raise the stop exception if SIGINT/SIGTERM asked the command to stop. Called between
    chunks: a stop that a library swallowed (an exception raised in a callback or a destructor
    is only printed) still ends the command there."""
    if _requested is not None:
        raise stop_exception(_requested)


class ForcedStopHook:
    """A cleanup registered with `on_forced_stop`; leaving its `with` block cancels it."""

    def __init__(self, fn: Callable[[], None]):
        self.id = next(_hook_ids)
        with _hooks_lock:
            _hooks[self.id] = fn

    def cancel(self) -> bool:
        """Unregister the hook; False if a forced stop has taken it (it runs or ran there)."""
        with _hooks_lock:
            return _hooks.pop(self.id, None) is not None

    def run(self) -> bool:
        """Run the hook now, in this thread (e.g. write the final report), unless a forced stop
        has taken it (then False); a forced stop meanwhile waits for it, so what it writes is
        not cut in half. (The hook must not register hooks.)"""
        with _hooks_lock:
            fn = _hooks.pop(self.id, None)
            if fn is not None:
                fn()
        return fn is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


def on_forced_stop(fn: Callable[[], None]) -> ForcedStopHook:
    """Have `fn` run if the command is cut short (see `stop_on_signals`): remove a temporary
    file, stop a child process, write a partial report. Hooks run last-registered first, from
    another thread while the main thread is stuck in native code; cancel a hook (or leave its
    `with` block) when the work it covers is done."""
    return ForcedStopHook(fn)


@contextlib.contextmanager
def stop_on_signals(grace: float | None = None):
    """Stop the block's work promptly on SIGINT or SIGTERM (in the main thread; elsewhere a
    no-op): the first signal raises KeyboardInterrupt (SIGINT) or `Terminated` (SIGTERM), so
    outputs unwind as on any error (temporaries removed, partial reports written); a second
    signal does not interrupt that cleanup. Python raises only between bytecodes, and one native
    step (a convolution over large frames) can take minutes: if the block has not ended `grace`
    seconds after the signal (default STOP_GRACE_S), a watcher thread runs the `on_forced_stop`
    hooks, prints the stop line and ends the process with 128 + the signal number. Signals that
    were ignored when the block started (a background job's SIGINT) stay ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _requested, _watching
    grace = STOP_GRACE_S if grace is None else grace
    wanted = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.getsignal(s) for s in wanted}
    recv, send = socket.socketpair()
    send.setblocking(False)
    try:
        old_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    except ValueError:  # (no wakeup fd: the signals still raise, without the deadline)
        old_fd = None
    _watching = old_fd is not None
    done, forcing = threading.Event(), threading.Lock()
    watcher = threading.Thread(target=_watch, args=(recv, done, forcing, grace), daemon=True,
                               name="videovae-stop-watcher")
    watcher.start()
    for s in wanted:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        with forcing:  # (a forced stop under way ends the process while this waits)
            done.set()
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
        _watching = False
        send.close()  # the watcher sees the end of its socket and returns
        watcher.join(1.0)
        _requested = None
        with _hooks_lock:
            _hooks.clear()


def _forget_wakeup_fd_in_child() -> None:
    """A forked child (a DataLoader worker) must not write its own signals into the parent's
    wakeup socket: the parent's watcher would take a worker's SIGTERM for its own."""
    if _watching:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_wakeup_fd_in_child)


def _on_signal(signum, frame):
    global _requested
    if _requested is not None:
        return  # already stopping: let the first signal's cleanup finish
    _requested = signum
    raise stop_exception(signum)


def _watch(recv: socket.socket, done: threading.Event, forcing: threading.Lock,
           grace: float) -> None:
    """The watcher thread: wait for a stop signal's byte on the wakeup socket, then give the
    main thread `grace` seconds to end the block before cutting it short."""
    with recv:
        while True:
            try:
                data = recv.recv(64)
            except OSError:
                return
            if not data:  # the block ended
                return
            signum = next((s for s in data if s in STOP_SIGNALS), None)
            if signum is None:
                continue
            if done.wait(grace):
                return
            with forcing:
                if done.is_set():
                    return
                _force_stop(signum, grace)


def _force_stop(signum: int, grace: float) -> None:
    """Run every registered hook (last first), say why, and end the process now."""
    with _hooks_lock:
        hooks = list(_hooks.values())[::-1]
        _hooks.clear()
    for fn in hooks:
        try:
            fn()
        except BaseException:  # noqa: BLE001 - best effort: the process ends anyway
            pass
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.write(f"\nvideovae: the current step did not end within {grace:g} s "
                         "of the signal: stopped without finishing it\n"
                         f"{stop_message(signum)}\n")
        sys.stderr.flush()
    os._exit(stop_exit_code(signum))

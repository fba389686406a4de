"""Set-up shared by the node's child processes (face workers, the object model process)."""
import signal
import sys


def worker_init() -> None:
    """Initializer of every worker process.

    Ctrl-C reaches the whole process group; the parent decides when workers end, so they
    ignore SIGINT (no KeyboardInterrupt tracebacks from children). On Linux a worker also
    asks the kernel for SIGTERM when its parent dies, so a SIGKILLed node leaves no orphans.
    (The kernel ties this to the *thread* that started the child; the node starts workers
    from threads that live as long as the node: its main thread, input workers, executor.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass

"""facerec_server.node_process: a SIGINT whose KeyboardInterrupt Python loses.

A SIGINT arriving while Python runs code whose exceptions it ignores (a weakref callback of
the import machinery, seen in CI as ``File "<frozen importlib._bootstrap>", line 207, in
cb``) used to print "Exception ignored ... Traceback" and let the node go on starting.
A real process, a real signal, delivered inside a weakref callback.
"""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, time, weakref
    from facerec_server import node_process

    node_process._guard_signals()

    class Thing:
        pass

    def callback(_ref):
        os.kill(os.getpid(), signal.SIGINT)  # handled right here, inside the callback
        time.sleep(0.05)

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing  # the callback runs; Python ignores what it raises
    print("went on", flush=True)
    try:
        node_process.init("probe", [])
    except KeyboardInterrupt:
        print("init refused: interrupted", flush=True)
    else:
        print("init started ROS", flush=True)
""")


def test_interrupt_lost_in_a_callback_prints_nothing_and_stops_the_start():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done
    assert "went on" in done.stdout, done
    assert "init refused: interrupted" in done.stdout, done
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done


def test_other_ignored_exceptions_are_still_printed():
    script = textwrap.dedent("""
        import weakref
        from facerec_server import node_process
        node_process._guard_signals()

        class Thing:
            pass

        def callback(_ref):
            raise ValueError("a real bug in a callback")

        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert "a real bug in a callback" in done.stderr, done

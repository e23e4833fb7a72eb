import sys

from . import warm_start


def _run() -> int:
    argv = sys.argv[1:]
    if warm_start.wanted(argv):  # a pipeline job: run it in a fork of a process with torch loaded
        code = warm_start.run_client(argv)
        if code is not None:
            return code
    from .cli import main

    return main()


sys.exit(_run())

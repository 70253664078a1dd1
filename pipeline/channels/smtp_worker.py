"""Entry point of an SMTP worker process: `python -m pipeline.channels.smtp_worker`.

A module of its own so that running it does not re-execute a module the package already imported.
"""

import sys

from pipeline.channels.smtp_session import serve

if __name__ == "__main__":
    serve(sys.stdin.fileno(), sys.stdout.fileno())

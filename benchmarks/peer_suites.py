"""The peer suite runner's former entry point: it lives in benchmarks/peers now."""

import sys

from benchmarks.peers.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

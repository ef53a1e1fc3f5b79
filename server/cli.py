"""The `vidgraph` command's old home: it lives in `vidgraph.cli` now. Console scripts installed
before the move (and `python -m vidgraph.server.cli`) still start it through here."""
import sys

from vidgraph.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m optimlab``: the lab's command line (see :mod:`optimlab.lab.cli`)."""

from optimlab.lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m lab``: the natlab command."""

from lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m lab.agents.aioice``: run one side of a call (``lab.agents.aioice.process``)."""

import sys

from lab.agents.aioice.process import main

if __name__ == "__main__":
    sys.exit(main())

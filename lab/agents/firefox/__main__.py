"""``python -m lab.agents.firefox``: one side of a call, in headless Firefox ESR."""

import sys

from lab.agents.browser.main import main
from lab.agents.firefox.browser import FIREFOX

sys.exit(main(sys.argv[1:], FIREFOX))

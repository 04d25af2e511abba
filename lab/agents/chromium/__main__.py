"""``python -m lab.agents.chromium``: one side of a call, in headless Chromium."""

import sys

from lab.agents.browser.main import main
from lab.agents.chromium.browser import CHROMIUM

sys.exit(main(sys.argv[1:], CHROMIUM))

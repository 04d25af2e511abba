"""What Chromium and Firefox share as lab agents: the page (``page/``, package data), the
local HTTP bridge between the driver and the page (``bridge``), the browser's process tree
(``process``), SDP reading and writing (``sdp``), candidate classification (``candidates``),
ICE servers (``iceservers``), the lab CA in NSS (``nss``), the call sequence (``call``) and
``natlab gather`` (``gather``). ``lab.agents.chromium`` and ``lab.agents.firefox`` only say
how to find, name and launch their browser (``kind.BrowserKind``).
"""

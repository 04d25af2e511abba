"""``python -m relay``: run the TURN/STUN server."""

from relay.server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

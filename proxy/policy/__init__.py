"""The pure policy engine (see engine.py for its theory of operation)."""

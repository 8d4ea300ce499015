"""The LCRSO components of openais-py: configuration parsers and service engines.

Every package below is loaded through its entry point (``openais.config`` or
``openais.services``); the executive core holds no list of them.
"""

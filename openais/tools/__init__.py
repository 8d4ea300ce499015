"""Command-line tools of the application library: ``openais-cfgtool``, ``openais-clmtool``, ``openais-cpgtool``."""

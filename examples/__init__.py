"""Sample applications written only against the public ``openais`` API (installed with the package)."""

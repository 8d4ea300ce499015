"""Configuration: the raw tree parsers produce, one schema, and the validated tree services see."""

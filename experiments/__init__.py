"""The paper's experiments (sections 4-6) with the bundle's configs: ``python -m experiments --help``."""

"""Speed and memory benchmarks of the DALACE liver bundle (``python -m benchmarks --help``)."""

"""``python -m benchmarks``: the benchmark command (:mod:`benchmarks.run`)."""

from .run import main

main()

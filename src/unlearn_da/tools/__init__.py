"""The commands a user runs around the pipeline: check-reproduction and expected-results
(``reproduction``), make bench, make gpu-check with its rates, projection and concurrency probe,
make smoke-paper, make verify (``provenance``), the measurements file and ``measure``, the DVC
experiments measurement, the workload count, and the generated tables and figure of README and
docs/. What rules and the Makefile run is in ``plumbing/``."""

"""Commands around the pipeline: make bench, make gpu-check and its concurrency probe, make
smoke-paper, DVC sharing, the workload count, and the generated tables of README and docs/."""

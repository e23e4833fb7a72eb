"""What the pipeline's rules, the Snakefile and the Makefile run, not a user: the run's DVC stage and
make pull's steps (``sharing``), Snakemake's records carried with a run (``snakemake_records``), the
scheduler's one pending wake-up (``snakemake_scheduler``) and Snakemake's own CPU (``workflow_usage``).
The commands a user runs are in ``tools/``."""

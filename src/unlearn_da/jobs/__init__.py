"""What the Snakemake rules run, one module per kind of job: train, unlearn, extract features,
compute metrics, and the session each job opens (device, data, timing)."""

"""Throw-away servers the tests start on 127.0.0.1 and stop when they end: S3 (moto) and SSH (OpenSSH)
for the DVC remotes, and a private single-node SLURM cluster."""

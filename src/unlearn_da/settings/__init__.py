"""The configuration: the safe YAML loader, the merged and validated config, and the grammar of
the hyper-parameter search space that the config declares."""

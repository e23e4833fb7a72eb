"""The equal-budget hyper-parameter search: planning its rounds, selecting per method, its
figures, and copying a selection into a profile."""

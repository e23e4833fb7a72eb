"""Pure metric functions on cached features and logits (numpy in, numbers out).

Nothing in this package imports torch at module level: the metrics job stays
cheap. ``da`` also accepts torch tensors, so the DA loss of the
unlearning methods and the DA metric are one implementation.
"""

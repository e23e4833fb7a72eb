"""Data sets and forget sets: reading the raw files (digits, Fashion-MNIST, CIFAR), the prepared
data set, synthetic CIFAR files for smoke runs, the splits and the backdoor poisoning."""

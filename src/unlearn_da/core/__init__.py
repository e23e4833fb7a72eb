"""The foundation every job stands on: errors, atomic artifacts and sidecars, CPU kernels, the
runtime (device, precision), the models and their training loop, checkpoints, the GPU pool and the
scenario names. Imports nothing else of the package."""

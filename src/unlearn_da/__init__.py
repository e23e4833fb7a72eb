"""unlearn_da: machine unlearning with dimensional alignment (MUDA), as a cached pipeline."""

from .core import kernels as _kernels

# the CPU kernels must be chosen before torch or numpy load (kernels.py): portable unless
# UNLEARN_DA_CPU_KERNELS=native; a job's own ``cpu_kernels`` param is applied by the CLI
_kernels.apply(_kernels.mode_from_environment())

__version__ = "0.1.0"

"""unlearn_da: machine unlearning with dimensional alignment (MUDA), as a cached pipeline."""

__version__ = "0.1.0"

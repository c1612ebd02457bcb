"""discrete_rae: regularized autoencoders for discrete and structured data.

The package never configures logging on import; the CLI does.
"""

__version__ = "0.1.0"

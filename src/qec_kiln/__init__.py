"""qec-kiln: distribute `sinter collect` sweeps over many machines."""

__version__ = "0.1.0"

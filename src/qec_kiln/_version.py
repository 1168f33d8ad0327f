"""The package version (one place; ``qec_kiln.__version__`` and the manifest read it)."""

__version__ = "0.1.0"

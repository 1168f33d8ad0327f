"""Shared fixtures. Server fixtures (moto S3, GCS emulator) and the real Slurm cluster live in
their own plugin modules next to this file."""

pytest_plugins = ["fixtures_servers", "fixtures_slurm"]

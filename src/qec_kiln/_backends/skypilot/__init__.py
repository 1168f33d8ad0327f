"""The SkyPilot backend: one managed job per batch (``num_jobs=N`` in one request), or a pool of
K warm workers; the launcher's own wheel shipped to the nodes.

The package's modules load only when asked for: ``options`` (flags, read by every parser) is
light; ``backend`` imports what the backend needs.
"""

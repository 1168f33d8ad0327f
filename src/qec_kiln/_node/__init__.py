"""What runs on a node: ``qec-kiln run-batch`` (runner), the batch's one-writer lease (lease),
and CPU/GPU sets for concurrent sinters (workers)."""

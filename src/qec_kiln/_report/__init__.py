"""Reading a sweep back: progress against targets (status, progress) and the merge into one CSV
(merge, output)."""

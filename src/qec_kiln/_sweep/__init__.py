"""The sweep as data: its settings (spec), its circuits (discover), its batches and shards, its
manifest and the fragments its batches write. Everything above reads and writes these."""

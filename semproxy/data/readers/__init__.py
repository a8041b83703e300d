"""One reader per benchmark layout; each exposes ``read(root) -> Benchmark`` and its expected counts."""

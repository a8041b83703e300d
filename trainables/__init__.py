"""Ray Tune trainables: thin glue between a sampled config and ``semproxy.train.fit`` (not built yet)."""

"""One module per stage kind, compute-node side."""

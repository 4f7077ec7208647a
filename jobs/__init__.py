"""Compute-node side. Importing this package must stay cheap: stage libraries are imported lazily,
inside the stage that needs them, never at module level."""

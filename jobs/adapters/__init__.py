"""How each stage library is driven (imported lazily, inside the stage's environment)."""

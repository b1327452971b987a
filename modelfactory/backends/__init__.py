"""One module per backend; each imports its SDK lazily, inside the functions that need it."""

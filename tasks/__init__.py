"""The suite's invoke collections, one module per area. tasks.py at the root assembles them."""

"""Console entry points (``reid-*``): thin ``main(argv) -> int`` wrappers over library code."""

"""Runtimes: turn what a platform delivers into Delivery values and apply the core's outcomes."""

"""Brokers: the Redis broker and the data-plane seam that plugins implement."""

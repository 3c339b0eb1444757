"""bottle command line."""

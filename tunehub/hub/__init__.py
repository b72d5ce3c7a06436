"""Everything that speaks to a Hub: URL parsing, pull, publish, and the bundled server."""

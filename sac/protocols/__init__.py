"""sac.protocols: the Twisted side of the wire: the push listener and the polling client."""

"""The web process: the vote intake (``POST /v1/votes``) now, a web console later, in one aiohttp application."""

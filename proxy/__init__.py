"""Activelead's data plane: an aiohttp reverse proxy that scores protected form posts inline."""

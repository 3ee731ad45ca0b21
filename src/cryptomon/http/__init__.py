"""The HTTP side: the aiohttp app, its route table and REST handlers."""

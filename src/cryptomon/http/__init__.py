"""The HTTP side: the aiohttp app, REST handlers and middlewares."""

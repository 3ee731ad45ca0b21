"""The running service: the composition root that wires the store, the read models,
notifications, probing, the REST routes and the live feed into one aiohttp app, and
its housekeeping jobs."""

"""The live feed: the hub that fans out notices, the socket handler, message shapes."""

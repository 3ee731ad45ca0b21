"""cryptomon: an event-sourced monitor for the third-party APIs crypto products depend on."""

__version__ = "0.1.0"

"""Probing: the scheduler, the probes and their conditions' evaluation, rate limits,
the monitor that records each result as an event, and the leases that divide the
providers between the instances sharing one log."""

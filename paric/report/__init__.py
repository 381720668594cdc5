"""Tables and figures of a run's results."""

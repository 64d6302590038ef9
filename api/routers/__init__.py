"""One router per resource, and the health checks."""

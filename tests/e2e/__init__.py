"""End-to-end flows through the real fleet, monitor, agents and Redis, in simulated time."""

"""Failure drills (DESIGN §7): kills, Redis restarts, LLM faults, fuzzed telemetry, injection."""

"""Tests of the LangGraph assembly: the Redis checkpointer and graphs."""

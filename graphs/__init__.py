"""LangGraph assembly: incident and chat graphs, state schemas, the Redis checkpointer."""

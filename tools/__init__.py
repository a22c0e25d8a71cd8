"""LangChain tools the agents call: thin, typed adapters over fleet/."""

"""One prompt template per agent, loaded as package data."""

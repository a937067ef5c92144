"""Development tools: never deployed."""

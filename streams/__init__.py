"""The llmens faust-streaming application: topics, agents, tables, and the `llmens` CLI."""

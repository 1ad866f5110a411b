"""Memory in three tiers: hot session state, semantic long-term memory, a cold archive."""

"""The schedules role: the lifecycle of schedules and executions, one-off jobs, YAML sync."""

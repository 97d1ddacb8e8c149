"""Probes: functions of (model, batch, ...) that return rows of numbers and leave no trace."""

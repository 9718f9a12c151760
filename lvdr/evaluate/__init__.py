"""The one evaluator: every method's predictions file, the same metrics, the same bootstrap."""

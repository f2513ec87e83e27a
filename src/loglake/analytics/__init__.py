"""Real-time analytics: continuous SQL over event-time windows of a stream."""

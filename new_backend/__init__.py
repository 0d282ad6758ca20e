"""The new service: the feature-based architecture (features/<name>/{api,service,repository})."""

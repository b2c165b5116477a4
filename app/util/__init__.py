"""Small helpers shared by controllers and services: errors, responses, binding, security."""

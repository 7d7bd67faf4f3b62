"""The approval side of the API server: answers to release approvals held until they are safe."""

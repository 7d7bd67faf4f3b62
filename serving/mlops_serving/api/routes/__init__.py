"""One router per OpenAPI tag; :func:`mlops_serving.app.create_app` includes them all."""

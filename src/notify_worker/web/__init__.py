"""The web layer: app factory, routes, authentication, pages."""

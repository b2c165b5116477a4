"""HTTP and WebSocket handlers (Sanic blueprints): validate, call one service, answer."""

"""Real-time serving: ``focalcodec serve`` (:mod:`.server`), its WebSocket protocol
(:mod:`.protocol`), a Python client (:mod:`.client`) and the browser page (``static/``).
See docs/serve.md."""

"""The HTTP API: its routers (:mod:`.routes`) and what they need from the app (:mod:`.deps`)."""

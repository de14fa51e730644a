"""Code the tests share that is not a test: servers and workers they run beside them (a chat
completions server, Celery workers, Redis, Daphne), waiting with a deadline, websocket clients,
and agents they hand to the app."""

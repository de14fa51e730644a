"""Code the tests run in other processes or hand to the app: helper agents, servers, workers."""

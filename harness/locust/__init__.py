"""Locust for LLM inference servers: the plugin behind `locust -f scenarios/` (docs/scenarios.md).

Locustfiles import `harness.locust.users.LLMUser` (which registers the harness's options and
event hooks) and `harness.locust.shape.LoadShape`. Nothing is re-exported here on purpose:
importing Locust monkey-patches the whole process for gevent, so the Locust-free modules
(timing, protocol, curves, batch, prompts, options) must stay importable without it, e.g. in tests.
"""

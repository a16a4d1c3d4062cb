"""The load shape of every scenario: --load-shape steady|ramp|step|spike|soak, by -u/-r/-t."""

from harness.locust.shape import LoadShape

__all__ = ["LoadShape"]

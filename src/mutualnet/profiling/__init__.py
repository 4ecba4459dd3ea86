"""Cost of a configuration: MACs and parameters (counted), latency (measured)."""

from .flops import Profile, count_macs, profile, profile_model
from .latency import Latency, measure_latency, resolve_device

__all__ = ["Profile", "profile", "profile_model", "count_macs", "Latency", "measure_latency", "resolve_device"]

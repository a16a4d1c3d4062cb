"""`harness capture`: a loopback recording proxy whose capture is a dataset and a sample."""

from harness.capture.anonymize import Pseudonymizer
from harness.capture.proxy import CaptureProxy, CaptureWriter

__all__ = ["CaptureProxy", "CaptureWriter", "Pseudonymizer"]

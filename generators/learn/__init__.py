"""Learn a profile from a sample of someone's records; generate any number like them.

`learn_profile(read_sample(paths))` -> profile (plain JSON, docs/generators.md "Profiles");
`ProfileBuilder(profile, seed)` builds record i; `privacy_report` checks an output for copies.
"""

from generators.learn.generate import ProfileBuilder, ProfileError, check_profile
from generators.learn.kinds import PII_KINDS, detect_kind
from generators.learn.profile import DEFAULT_K, PROFILE_VERSION, learn_profile, sample_pii
from generators.learn.sample import Sample, SampleError, read_sample

__all__ = [
    "DEFAULT_K",
    "PII_KINDS",
    "PROFILE_VERSION",
    "ProfileBuilder",
    "ProfileError",
    "Sample",
    "SampleError",
    "check_profile",
    "detect_kind",
    "learn_profile",
    "read_sample",
    "sample_pii",
]

"""smsweep: sweeps of masked-image-modeling pretraining for segmentation networks."""

__version__ = "0.1.0"

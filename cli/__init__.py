"""ALANet Edge: pain and protective-behaviour detection from training to wearable gateways."""

__version__ = "0.1.0"

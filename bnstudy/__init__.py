"""bnstudy: how does BatchNorm help optimization? (Santurkar et al., NeurIPS 2018), reproduced and extended."""

__version__ = "0.1.0"

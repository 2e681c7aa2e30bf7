"""OpenMatch (Saito et al., NeurIPS 2021) as a USB algorithm."""

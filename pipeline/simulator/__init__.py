"""The simulated GPU cloud: a deterministic fleet served over real HTTP on loopback."""

"""Wearable <-> gateway serial bridge: wire protocol v1 (PROTOCOL.md), sans-I/O codec,
CSV mode, self-healing port layer, firmware simulator and the C encoder for firmware."""

"""Many gateways, one place to watch and flash them: Mosquitto bridges to a central broker.

Each gateway runs its own Mosquitto (the gateway and any ward tablet talk to it);
that broker bridges the gateway's topics to a central Mosquitto over TLS, logging in
with the gateway's own credentials, and an ACL on the central broker keeps every
gateway inside its own ``alanet/<gateway>/…`` topics. :mod:`.mosquitto` writes the
configuration files for both sides (the examples shipped next to it are its output);
``docs/fleet.md`` explains the set-up.
"""

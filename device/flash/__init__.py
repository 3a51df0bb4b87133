"""Flashing model bundles to gateways: the on-disk store, the MQTT transfer, the sender.

- :mod:`~alanet.device.flash.store`: :class:`BundleStore`, the bundles a gateway keeps
  (current and previous) under ``<state_dir>/bundles/`` and the shared verification.
- :mod:`~alanet.device.flash.protocol`: topics and messages of the chunked transfer
  (sans-I/O: the receiver's bookkeeping is a pure class over a staging directory).
- :mod:`~alanet.device.flash.agent`: :class:`FlashAgent`, the gateway side.
- :mod:`~alanet.device.flash.sender`: ``alanet flash``.
"""

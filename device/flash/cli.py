"""``alanet flash`` (argparse only; the implementation is imported lazily)."""

from __future__ import annotations

import argparse

from alanet.main import lazy


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet flash`` to the ``alanet`` parser."""
    p = sub.add_parser(
        "flash", help="send a model bundle to gateways over MQTT, install it locally, or roll back",
        description="Send a model bundle to gateways over MQTT (chunks on alanet/<gw>/cmd/flash/..., QoS 1, "
        "resumed after a broker restart); each gateway verifies size, SHA-256, signature, self-test and that the "
        "model fits its wearable, then switches models between two windows and reports on alanet/<gw>/model. "
        "Ends with a fleet summary; exit status 1 unless every gateway took it. With --to PATH the bundle is "
        "verified and installed into a gateway state directory (or a mounted SD card) instead.",
        epilog="examples: alanet flash bundle/ --broker mqtt://broker:1883 --gateway gw1 gw2 | "
        "alanet flash bundle.tar.xz --broker mqtt://broker --all | "
        "alanet flash bundle/ --to /media/sd/var/lib/alanet --trust release.pub | "
        "alanet flash --rollback --broker mqtt://broker --gateway gw1 --sign release.key")
    p.add_argument("bundle", nargs="?", metavar="BUNDLE", help="bundle directory or .tar.xz / .tar archive")
    p.add_argument("--broker", help="mqtt://[user[:pass]@]host[:port] or mqtts://...")
    p.add_argument("--gateway", nargs="+", metavar="ID", help="gateway id(s) to flash")
    p.add_argument("--all", action="store_true", help="every gateway whose retained status says online")
    p.add_argument("--to", metavar="PATH", help="install into this gateway state directory instead of sending")
    p.add_argument("--rollback", action="store_true", help="go back to the previous bundle (no BUNDLE)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the gateways (default %(default)s)")
    p.add_argument("--chunk-size", dest="chunk_size", type=int, default=32768,
                   help="bytes per MQTT message, 1024..262144 (default %(default)s; raised when the archive would "
                   "need more than 4096 chunks)")
    p.add_argument("--plain-tar", dest="plain_tar", action="store_true",
                   help="send a bundle directory as a plain tar (for gateways that predate xz-compressed archives)")
    p.add_argument("--ca-file", dest="ca_file", help="CA certificate for mqtts://")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    p.add_argument("--trust", action="append", metavar="KEY.pub",
                   help="with --to: public key a signature must verify against (repeatable)")
    p.add_argument("--allow-unsigned", dest="allow_unsigned", action="store_true",
                   help="with --to and no --trust: accept unsigned bundles")
    p.add_argument("--sign", metavar="KEY",
                   help="with --rollback over MQTT: the private key that signs the command (gateways with trusted "
                   "keys obey only signed commands)")
    p.add_argument("--allow-downgrade", dest="allow_downgrade", action="store_true",
                   help="with --to: install a bundle older (bundle_version) than the newest this gateway has run")
    p.add_argument("--sample-rate", dest="sample_rate", type=float, default=60.0,
                   help="with --to: the wearable's sample rate in Hz (default %(default)s)")
    p.set_defaults(func=lazy("alanet.device.flash.sender:cmd_flash"))

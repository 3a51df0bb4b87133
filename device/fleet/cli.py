"""``alanet fleet-config`` (argparse only; the implementation is imported lazily)."""

from __future__ import annotations

import argparse

from alanet.main import lazy


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet fleet-config`` to the ``alanet`` parser."""
    p = sub.add_parser(
        "fleet-config", help="write the Mosquitto files of a fleet: gateway bridges, central broker, ACL",
        description="Write the Mosquitto configuration for many gateways and one central broker: on each "
        "gateway a local Mosquitto bridged to the central one (alerts, status, model and flash replies out at "
        "QoS 1, live state at QoS 0, commands in at QoS 1; persistent sessions, TLS, the gateway id as user "
        "name); on the central broker a TLS listener, a password file, and an ACL that keeps every gateway "
        "inside alanet/<gateway>/. See docs/fleet.md.",
        epilog="examples: alanet fleet-config gateway --gateway ward3-bed2 --central central.clinic.example "
        "--password-file ward3-bed2.secret --out /etc/mosquitto/conf.d/alanet-bridge.conf | "
        "alanet fleet-config central --out-dir central-files/")
    which = p.add_subparsers(dest="which", metavar="WHICH")
    which.required = True
    g = which.add_parser("gateway", help="the drop-in for one gateway's Mosquitto (local listener + bridge)",
                         description="The Mosquitto drop-in for one gateway: a loopback listener for `alanet run` "
                         "and the bridge to the central broker.")
    g.add_argument("--gateway", required=True, metavar="ID", help="the gateway id (also its user name centrally)")
    g.add_argument("--central", required=True, metavar="HOST[:PORT]",
                   help="the central broker (port default 8883, 1883 with --no-tls)")
    g.add_argument("--ca-file", dest="ca_file", metavar="PATH",
                   help="CA the central broker's certificate is checked against, as a path on the gateway "
                   "(default /etc/mosquitto/certs/alanet-fleet-ca.crt)")
    g.add_argument("--cert-file", dest="cert_file", metavar="PATH", help="client certificate (with --key-file)")
    g.add_argument("--key-file", dest="key_file", metavar="PATH", help="client certificate's key")
    g.add_argument("--password-file", dest="password_file", metavar="FILE",
                   help="file holding the gateway's password on the central broker (first line)")
    g.add_argument("--no-tls", dest="no_tls", action="store_true", help="plain TCP (a network you trust only)")
    g.add_argument("--homeassistant-prefix", dest="homeassistant_prefix", metavar="PREFIX",
                   help="also bridge Home Assistant discovery topics under PREFIX")
    g.add_argument("--out", metavar="FILE", help="write here (mode 640) instead of printing")
    c = which.add_parser("central", help="the central broker's drop-in and ACL file",
                         description="The central Mosquitto's drop-in (TLS listener, passwords, ACL, queue "
                         "limits) and its ACL file.")
    c.add_argument("--port", type=int, help="listener port (default 8883, 1883 with --no-tls)")
    c.add_argument("--bind", metavar="ADDRESS", help="listen on this address only (default: all)")
    c.add_argument("--ca-file", dest="ca_file", metavar="PATH", help="CA (default /etc/mosquitto/certs/alanet-fleet-ca.crt)")
    c.add_argument("--cert-file", dest="cert_file", metavar="PATH", help="server certificate "
                   "(default /etc/mosquitto/certs/central.crt)")
    c.add_argument("--key-file", dest="key_file", metavar="PATH", help="server key (default /etc/mosquitto/certs/central.key)")
    c.add_argument("--require-certificate", dest="require_certificate", action="store_true",
                   help="clients must present a certificate signed by the CA as well")
    c.add_argument("--no-tls", dest="no_tls", action="store_true", help="plain TCP listener (tests only)")
    c.add_argument("--password-file", dest="password_file", metavar="PATH",
                   help="Mosquitto password file path (default /etc/mosquitto/alanet.passwd)")
    c.add_argument("--acl-file", dest="acl_file", metavar="PATH", help="ACL file path (default /etc/mosquitto/alanet.acl)")
    c.add_argument("--reader", action="append", metavar="USER",
                   help="read-only account (alanet alerts/live, dashboards); repeatable (default dashboard)")
    c.add_argument("--deployer", action="append", metavar="USER",
                   help="account allowed to flash (alanet flash); repeatable (default deploy)")
    c.add_argument("--homeassistant-prefix", dest="homeassistant_prefix", metavar="PREFIX",
                   help="let gateways publish Home Assistant discovery topics under PREFIX")
    c.add_argument("--out-dir", dest="out_dir", metavar="DIR",
                   help="write alanet-central.conf and alanet.acl here instead of printing")
    p.set_defaults(func=lazy("alanet.device.fleet.mosquitto:cmd_fleet_config"))

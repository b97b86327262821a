"""A real SMTP server for tests/notifiers.rs: aiosmtpd, optionally with STARTTLS required and
AUTH (PLAIN/LOGIN, only after STARTTLS); every accepted mail is written to DIR as N.eml with a
N.json beside it (envelope sender and recipients). Prints "ready PORT" once it listens.

    python tests/smtp_server.py --dir DIR [--port 0] [--cert CERT --key KEY] [--user U --password P]
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        with open(base + ".json.tmp", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "tls": session.ssl is not None, "authenticated": bool(session.authenticated)}, f)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".json.tmp", base + ".json")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    port = args.port
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]

    kwargs = {}
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        kwargs.update(tls_context=context, require_starttls=True)
    if args.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == args.user.encode() and auth_data.password == args.password.encode()
            return AuthResult(success=ok, handled=False)
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(args.cert))

    controller = Controller(Store(args.dir), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print(f"ready {port}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()

"""Client of tenderd's control socket: newline-delimited JSON over a Unix socket.

Run it as ``python3 -m ecar_deployment.client --socket PATH COMMAND`` to
print the daemon's response, or import ``DeploymentClient``.
"""

import argparse
import json
import socket
import sys

DEFAULT_SOCKET = "/run/tender/tenderd.sock"
# Maximum response line read; tenderd's history is the largest response.
MAX_LINE_BYTES = 16 * 1024 * 1024


class DeploymentError(Exception):
    """tenderd rejected a request, or the socket could not be used."""


class DeploymentClient:
    """One connection per request, so a client object can be shared by threads."""

    def __init__(self, socket_path=DEFAULT_SOCKET, timeout=None):
        self.socket_path = socket_path
        self.timeout = timeout

    def _connect(self):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(self.socket_path)
        except PermissionError as error:
            connection.close()
            raise DeploymentError(
                "permission denied on the tenderd control socket %s; run as root or as a member of its group"
                % self.socket_path
            ) from error
        except OSError as error:
            connection.close()
            raise DeploymentError("cannot connect to tenderd at %s: %s; is `tenderd run` running?" % (self.socket_path, error)) from error
        return connection

    @staticmethod
    def _read_line(stream):
        line = stream.readline(MAX_LINE_BYTES)
        if not line:
            raise DeploymentError("tenderd closed the connection without an answer")
        return json.loads(line)

    @staticmethod
    def _result(response):
        if not response.get("ok"):
            raise DeploymentError(response.get("error") or "tenderd reported an error without a message")
        return response.get("result")

    def request(self, command, **fields):
        """Send one request and return its result; raise DeploymentError on failure."""
        message = dict(fields, command=command)
        with self._connect() as connection, connection.makefile("rb") as stream:
            connection.sendall(json.dumps(message).encode() + b"\n")
            return self._result(self._read_line(stream))

    def status(self):
        return self.request("status")

    def history(self):
        return self.request("history")

    def deploy(self, source, version=None, allow_reverted=False):
        fields = {"source": source, "allow_reverted": allow_reverted}
        if version is not None:
            fields["version"] = version
        return self.request("deploy", **fields)

    def rollback(self):
        return self.request("rollback")

    def commit(self):
        return self.request("commit")

    def hold(self):
        return self.request("hold")

    def resume(self):
        return self.request("resume")

    def events(self, replay=0):
        """Yield state events (dicts) as tenderd records them, until the daemon stops."""
        with self._connect() as connection, connection.makefile("rb") as stream:
            connection.sendall(json.dumps({"command": "events", "replay": replay}).encode() + b"\n")
            self._result(self._read_line(stream))
            while True:
                line = stream.readline(MAX_LINE_BYTES)
                if not line:
                    return
                yield json.loads(line)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m ecar_deployment.client", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="control socket path (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "history", "rollback", "commit", "hold", "resume"):
        commands.add_parser(name)
    deploy = commands.add_parser("deploy")
    deploy.add_argument("source", help="bundle path, repository directory or URL, as tenderd sees it")
    events = commands.add_parser("events")
    events.add_argument("--replay", type=int, default=0, help="past events printed first")
    events.add_argument("--count", type=int, default=None, help="exit after this many events")
    args = parser.parse_args(argv)

    client = DeploymentClient(args.socket)
    try:
        if args.command == "events":
            for index, event in enumerate(client.events(args.replay), start=1):
                print(json.dumps(event, sort_keys=True), flush=True)
                if args.count is not None and index >= args.count:
                    break
        elif args.command == "deploy":
            print(json.dumps(client.deploy(args.source), sort_keys=True))
        else:
            print(json.dumps(client.request(args.command), sort_keys=True))
    except DeploymentError as error:
        print("ecar_deployment: error: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

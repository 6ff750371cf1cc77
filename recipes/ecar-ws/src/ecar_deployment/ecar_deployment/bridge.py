"""Topic payloads and service results of the ROS 2 node, without ROS, so
that tests run them against a real tenderd socket."""

import json

from ecar_deployment.client import DeploymentClient, DeploymentError


class DeploymentBridge:
    """Turns control socket results into topic payloads and Trigger results."""

    def __init__(self, client, deploy_source=""):
        self.client = client
        self.deploy_source = deploy_source

    def status_message(self):
        """JSON text for /deployment/status: tenderd's status fields, or an error field."""
        try:
            status = self.client.status()
        except DeploymentError as error:
            status = {"error": str(error)}
        return json.dumps(status, sort_keys=True)

    @staticmethod
    def event_message(event):
        """JSON text for /deployment/events."""
        return json.dumps(event, sort_keys=True)

    def deploy(self):
        """Trigger result of /deployment/deploy as (success, message)."""
        if not self.deploy_source:
            return False, "the deploy_source parameter is empty; set it to a bundle path or repository URL"
        try:
            report = self.client.deploy(self.deploy_source)
        except DeploymentError as error:
            return False, str(error)
        message = "%s in slot %s: %s (%s)" % (report.get("release"), report.get("slot"), report.get("phase"), report.get("detail"))
        return report.get("phase") == "committed", message

    def rollback(self):
        """Trigger result of /deployment/rollback as (success, message)."""
        try:
            release = self.client.rollback()
        except DeploymentError as error:
            return False, str(error)
        return True, "rolled back to %s" % release


def bridge_for(socket_path, deploy_source=""):
    return DeploymentBridge(DeploymentClient(socket_path), deploy_source)

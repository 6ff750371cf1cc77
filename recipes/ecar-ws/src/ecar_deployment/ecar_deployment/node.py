"""ROS 2 node: /deployment/status and /deployment/events (std_msgs/String
with JSON), /deployment/deploy and /deployment/rollback (std_srvs/Trigger).

Parameters: ``socket`` (tenderd's control socket), ``deploy_source`` (what
/deployment/deploy installs) and ``status_period`` in seconds.
"""

import threading
import time

from ecar_deployment.bridge import bridge_for
from ecar_deployment.client import DEFAULT_SOCKET, DeploymentError

# Pause before subscribing to events again after tenderd went away.
RESUBSCRIBE_SECONDS = 5.0


def main(args=None):
    # rclpy is imported here so that the package builds and its plain modules
    # import where ROS 2 is not installed.
    import rclpy
    from rclpy.node import Node
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    rclpy.init(args=args)
    node = Node("deployment")
    socket_path = node.declare_parameter("socket", DEFAULT_SOCKET).value
    deploy_source = node.declare_parameter("deploy_source", "").value
    period = float(node.declare_parameter("status_period", 5.0).value)
    bridge = bridge_for(socket_path, deploy_source)

    status_publisher = node.create_publisher(String, "/deployment/status", 10)
    event_publisher = node.create_publisher(String, "/deployment/events", 10)

    def publish_status():
        status_publisher.publish(String(data=bridge.status_message()))

    def trigger(action):
        def callback(_request, response):
            response.success, response.message = action()
            publish_status()
            return response
        return callback

    node.create_timer(period, publish_status)
    node.create_service(Trigger, "/deployment/deploy", trigger(bridge.deploy))
    node.create_service(Trigger, "/deployment/rollback", trigger(bridge.rollback))

    def forward_events():
        while rclpy.ok():
            try:
                for event in bridge.client.events():
                    event_publisher.publish(String(data=bridge.event_message(event)))
                    publish_status()
            except DeploymentError as error:
                node.get_logger().warning("event stream from tenderd ended: %s" % error)
            time.sleep(RESUBSCRIBE_SECONDS)

    threading.Thread(target=forward_events, name="tenderd-events", daemon=True).start()
    try:
        rclpy.spin(node)
    finally:
        node.destroy_node()
        rclpy.shutdown()

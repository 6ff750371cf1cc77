"""Bridge between tenderd's control socket and ROS 2.

The socket client (``client``) and the topic and service logic (``bridge``)
need only the standard library; ``node`` imports rclpy when it starts.
"""

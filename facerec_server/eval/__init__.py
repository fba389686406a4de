"""Offline evaluation tools (``facerec-eval``): benchmarks of the recognition core on public data.

Nothing here imports rclpy; see :mod:`facerec_server.eval.lfw` for the LFW verification protocol.
"""

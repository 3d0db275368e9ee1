"""The runner: one class per runtime and the latency protocol, shared by host and device.

Dependencies: NumPy and one runtime. Never import TensorFlow, Click or edgeship here.
"""

"""The on-robot side: robot spec, observation/action contract, wire protocols, policy runtime, control loop.

Imports numpy, onnxruntime, pyserial, pyzmq, yaml and the Dynamixel SDK only; never torch or a physics engine.
"""

__version__ = "0.1.0"

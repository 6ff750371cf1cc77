from setuptools import setup

# All metadata lives in setup.cfg. colcon identifies a Python package by its
# setup.py, and reads setup.cfg directly when setup.py is a bare setup() call.
setup()

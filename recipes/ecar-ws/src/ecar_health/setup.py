from setuptools import setup

# All metadata lives in setup.cfg. This file exists so that colcon's
# colcon-python-setup-py extension identifies the package.
setup()

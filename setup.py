"""What setup.cfg cannot say: the page templates at the top of the source tree ship inside
the package (``sac/templates``), and the twistd plugin joins ``twisted.plugins``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["sac", "sac.*"]), "sac.templates", "twisted.plugins"],
    package_dir={"sac.templates": "templates"},
    package_data={
        "sac.store": ["migrations/*/*.sql"],
        "sac.templates": ["*.html"],
        "sac.web": ["static/*"],
        "twisted.plugins": ["sac_dropin.py"],
    },
    exclude_package_data={"twisted.plugins": ["dropin.cache"]},
)

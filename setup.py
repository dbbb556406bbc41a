"""Package discovery: ``acegen/`` plus the top-level ``templates/`` folder, shipped as the
package ``acegen.templates`` (the layout the project asks for).  Metadata is in
pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["acegen", "acegen.*"]) + ["acegen.templates"],
    package_dir={"acegen.templates": "templates"},
)

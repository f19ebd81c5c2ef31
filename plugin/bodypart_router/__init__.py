"""bodypart-router: classify X-rays by body part from their pixels and route them.

The core (everything in this package except ``orthanc_plugin``) never imports
``orthanc``: decode -> preprocess -> classify -> decide routes, usable from the
CLI, from tests and from the Orthanc adapter alike.
"""

__version__ = "0.1.0"
